{{/*
Chart name, truncated to the 63 characters Kubernetes names allow.
*/}}
{{- define "bauta.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name.
*/}}
{{- define "bauta.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "bauta.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "bauta.labels" -}}
helm.sh/chart: {{ include "bauta.chart" . }}
{{ include "bauta.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "bauta.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bauta.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
True ("true") if any listener terminates TLS.
*/}}
{{- define "bauta.anyTLS" -}}
{{- range .Values.config.listeners }}{{ if .tls }}true{{ end }}{{ end }}
{{- end }}

{{/*
TOML values. toJson yields valid TOML for strings (JSON escapes are a subset
of TOML basic-string escapes), numbers and flat arrays.
*/}}
{{- define "bauta.tomlList" -}}
{{- default (list) . | toJson }}
{{- end }}

{{/*
bauta.toml rendered from .Values.config (or .Values.config.raw verbatim).
*/}}
{{- define "bauta.config" -}}
{{- $c := .Values.config -}}
{{- if $c.raw -}}
{{ $c.raw }}
{{- else -}}
# Rendered by the bauta Helm chart from .Values.config.
[admin]
listen = {{ printf "%s:%d" $c.admin.address (int $c.admin.port) | toJson }}
{{- range $c.listeners }}

[[listener]]
name = {{ .name | toJson }}
listen = {{ printf "%s:%d" (.address | default "0.0.0.0") (int .port) | toJson }}
protocols = {{ include "bauta.tomlList" .protocols }}
{{- if .tls }}
tls_cert = "/etc/bauta/tls/tls.crt"
tls_key = "/etc/bauta/tls/tls.key"
{{- end }}
{{- end }}

[dns]
servers = {{ include "bauta.tomlList" $c.dns.servers }}

[policy]
default = {{ $c.policy.default | toJson }}
{{- range $c.policy.rules }}

[[policy.rule]]
name = {{ required "every policy rule needs a name" .name | toJson }}
action = {{ required "every policy rule needs an action" .action | toJson }}
{{- with .protocols }}
protocols = {{ toJson . }}
{{- end }}
{{- with .hosts }}
hosts = {{ toJson . }}
{{- end }}
{{- with .ports }}
ports = {{ toJson . }}
{{- end }}
{{- with .cidrs }}
cidrs = {{ toJson . }}
{{- end }}
{{- end }}

[limits]
connect_timeout_ms = {{ int $c.limits.connectTimeoutMs }}
dns_timeout_ms = {{ int $c.limits.dnsTimeoutMs }}
idle_timeout_s = {{ int $c.limits.idleTimeoutS }}
drain_delay_s = {{ int $c.limits.drainDelayS }}
shutdown_grace_s = {{ int $c.limits.shutdownGraceS }}
{{- end }}
{{- end }}
