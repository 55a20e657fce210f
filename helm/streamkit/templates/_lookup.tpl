{{/*
The chart's only cluster read. Returns the live workload as YAML (use with
fromYaml), or nothing: under `helm template`, `--dry-run` without a cluster,
and on a fresh install lookup finds nothing. Kept alone in this file so the
chart tests can replace it with canned objects.
Call with (dict "root" $ "kind" "Deployment" "namespace" ns "name" name).
*/}}
{{- define "streamkit.lookupWorkload" -}}
{{- with lookup "apps/v1" .kind .namespace .name }}
{{- toYaml . }}
{{- end }}
{{- end }}
