#!/usr/bin/env bash
# Coverage-guided fuzzing of Bauta's parsers: installs cargo-fuzz if it is
# missing (from crates.io; needs the nightly toolchain, which it installs
# with rustup if absent), then runs every target for SECONDS each, one after
# the other, niced, starting from the committed seeds. Prints one summary
# line per target. New inputs go to tests/fuzz/corpus/ and crashes to
# tests/fuzz/artifacts/ (both ignored by git): fix the parser, then copy the
# crash to tests/fuzz/regressions/TARGET/ so that the normal test suite
# (tests/tests/fuzz_regressions.rs) replays it.
#
#   tests/fuzz/run.sh 60            # every target, 60 s each
#   tests/fuzz/run.sh 300 capsule   # chosen targets only
set -uo pipefail
cd "$(dirname "$0")/../.."

secs="${1:?usage: tests/fuzz/run.sh SECONDS [TARGET...]}"
shift
fuzz=tests/fuzz

if ! rustup toolchain list | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked || cargo install cargo-fuzz
fi

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list --fuzz-dir "$fuzz")
fi

# Build once for all targets (a failed build is not a fuzz result).
cargo +nightly fuzz build --fuzz-dir "$fuzz" -O || exit 1

logs="$fuzz/artifacts/logs"
mkdir -p "$logs"
status=0
summary=()
for t in "${targets[@]}"; do
  mkdir -p "$fuzz/corpus/$t" "$fuzz/artifacts/$t"
  log="$logs/$t.log"
  nice -n 10 cargo +nightly fuzz run --fuzz-dir "$fuzz" -O "$t" \
    "$fuzz/corpus/$t" "$fuzz/seeds/$t" -- \
    -max_total_time="$secs" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
    >"$log" 2>&1
  rc=$?
  crashes=$(find "$fuzz/artifacts/$t" -type f \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' \) | wc -l)
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  cov=$(grep -oE '(#[0-9]+[[:space:]]+(DONE|INITED|NEW|REDUCE|pulse)[[:space:]]+cov: [0-9]+ ft: [0-9]+)' "$log" | tail -1 | grep -oE 'cov: [0-9]+ ft: [0-9]+')
  line=$(printf '%-14s %5ss  execs %-10s exec/s %-7s %-20s crashes %s  rc %s' \
    "$t" "$secs" "${execs:-?}" "${rate:-?}" "${cov:-cov: ?}" "$crashes" "$rc")
  echo "$line"
  summary+=("$line")
  if [ "$rc" -ne 0 ] || [ "$crashes" -gt 0 ]; then
    status=1
    echo "  see $log and $fuzz/artifacts/$t/" >&2
  fi
done
echo "== summary =="
printf '%s\n' "${summary[@]}"
exit $status
