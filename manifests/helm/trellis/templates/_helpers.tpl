{{/*
trellis.image renders REGISTRY/NAME:TAG for one Trellis binary:
  {{ include "trellis.image" (list . "trellis-proxy") }}
*/}}
{{- define "trellis.image" -}}
{{- $root := index . 0 -}}
{{- $root.Values.image.registry }}/{{ index . 1 }}:{{ $root.Values.image.tag | default $root.Chart.AppVersion }}
{{- end -}}
