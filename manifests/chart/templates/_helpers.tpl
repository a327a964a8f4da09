{{/* The image reference: repository and tag (the chart's appVersion unless set). */}}
{{- define "mcsd.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
