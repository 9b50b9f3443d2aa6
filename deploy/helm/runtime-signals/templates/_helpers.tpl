{{/* Labels of every resource: the kustomize base's, plus Helm's own. */}}
{{- define "runtime-signals.labels" -}}
app.kubernetes.io/part-of: runtime-signals
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "runtime-signals.image" -}}
{{- $image := index .root.Values.image .part -}}
{{ $image.repository }}:{{ $image.tag | default .root.Chart.AppVersion }}
{{- end -}}

{{/* Rolls the pods when signals.toml changes (kustomize's configMapGenerator does it with a
name suffix). */}}
{{- define "runtime-signals.configChecksum" -}}
checksum/config: {{ .Values.config | sha256sum }}
{{- end -}}
