{{/*
Stateful pipelines (`state.enabled`): an App that declares tables keeps each
table partition's local store in STREAMKIT_STATE_DIR, on a volume of its own
per pod. The store is a cache of the table's changelog topic: a pod that
starts on an empty volume restores its partitions from the whole changelog,
one that keeps its volume (and, with staticMembership, its partitions)
replays only the changelog written since its last checkpoint. So the
pipeline runs as a StatefulSet: pod N always gets claim state-<name>-N back.
*/}}

{{/*
A pipeline's state settings with defaults filled in, as YAML (use with
fromYaml): entries of `pipelines` replace the list in values.yaml, so they do
not inherit its defaults. Call with (dict "pipeline" $pipeline ...).
*/}}
{{- define "streamkit.pipeline.state" -}}
{{- $given := .pipeline.state | default dict }}
{{- $defaults := dict "enabled" false "size" "10Gi" "storageClassName" "" "mountPath" "/var/lib/streamkit/state" "accessModes" (list "ReadWriteOnce") }}
{{- $out := dict }}
{{- range $key, $default := $defaults }}
{{- $_ := set $out $key (ternary (get $given $key) $default (hasKey $given $key)) }}
{{- end }}
{{- toYaml $out }}
{{- end }}

{{/*
The workload kind of a pipeline: a StatefulSet for static membership (stable
pod names) or for state (a volume per pod that outlives it), else a
Deployment. Call with (dict "pipeline" $pipeline ...).
*/}}
{{- define "streamkit.pipeline.kind" -}}
{{- $state := include "streamkit.pipeline.state" . | fromYaml }}
{{- ternary "StatefulSet" "Deployment" (or (default false .pipeline.staticMembership) $state.enabled) }}
{{- end }}

{{/*
The StatefulSet's volumeClaimTemplates, when state is on. A StatefulSet's
claim templates cannot change once it exists (streamkit.pipeline.checkLive
refuses a change at render), so they carry the stable selector labels only,
never the chart version. Call with (dict "root" $ "pipeline" $pipeline).
*/}}
{{- define "streamkit.pipeline.volumeClaimTemplates" -}}
{{- $state := include "streamkit.pipeline.state" . | fromYaml }}
{{- if $state.enabled }}
volumeClaimTemplates:
  - metadata:
      name: state
      labels:
        {{- include "streamkit.pipeline.selectorLabels" . | nindent 8 }}
    spec:
      accessModes:
        {{- toYaml $state.accessModes | nindent 8 }}
      {{- /* Left out when empty: storageClassName "" would mean "no class"
      (pre-provisioned volumes only), not the cluster default. */}}
      {{- with $state.storageClassName }}
      storageClassName: {{ . | quote }}
      {{- end }}
      resources:
        requests:
          storage: {{ $state.size | quote }}
{{- end }}
{{- end }}

{{/*
A storage quantity in bytes, so that "10Gi" and "10240Mi" compare equal (the
API server returns quantities in canonical form, not as written). Integer
quantities only, as the schema allows; anything else is returned unchanged.
*/}}
{{- define "streamkit.quantityBytes" -}}
{{- $quantity := toString . }}
{{- $digits := regexFind "^[1-9][0-9]*" $quantity }}
{{- $suffix := trimPrefix $digits $quantity }}
{{- $factors := dict "" 1 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 "P" 1000000000000000 "E" 1000000000000000000 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 "Pi" 1125899906842624 "Ei" 1152921504606846976 }}
{{- if and $digits (hasKey $factors $suffix) }}
{{- mul (int64 $digits) (get $factors $suffix) }}
{{- else }}
{{- $quantity }}
{{- end }}
{{- end }}

{{/*
Refuses, at render, an upgrade that the live workload would turn into
something worse than the values suggest:

- a kind change (Deployment <-> StatefulSet, when staticMembership or
  state.enabled flips): helm deletes one workload and creates the other, so
  every pod stops at once and, with state, every new pod restores its tables
  from the whole changelog. Allowed with allowKindChange.
- a change of the StatefulSet's volume claims (state on or off, size,
  storageClassName, accessModes): the API server refuses any change of
  volumeClaimTemplates, and with it the whole upgrade, after helm may
  already have patched other objects.

The live objects come from streamkit.lookupWorkload, which finds nothing
under `helm template` or on a fresh install: then nothing is checked.
Call with (dict "root" $ "pipeline" $pipeline).
*/}}
{{- define "streamkit.pipeline.checkLive" -}}
{{- $p := .pipeline }}
{{- $root := .root }}
{{- $name := include "streamkit.pipeline.fullname" . }}
{{- $kind := include "streamkit.pipeline.kind" . }}
{{- $state := include "streamkit.pipeline.state" . | fromYaml }}
{{- $namespace := $root.Release.Namespace }}
{{- $docs := "docs/deploy.md, \"Stateful pipelines\"" }}
{{- $orphan := printf "kubectl -n %s delete statefulset %s --cascade=orphan" $namespace $name }}
{{- if not $p.allowKindChange }}
{{- $other := ternary "Deployment" "StatefulSet" (eq $kind "StatefulSet") }}
{{- with include "streamkit.lookupWorkload" (dict "root" $root "kind" $other "namespace" $namespace "name" $name) | fromYaml }}
{{- $why := "staticMembership and state.enabled are false" }}
{{- $cost := "every pod stops at once" }}
{{- if dig "spec" "volumeClaimTemplates" (list) . }}
{{- $cost = printf "every pod stops at once, and the StatefulSet's state volume claims (state-%s-<ordinal>) stay until you delete them" $name }}
{{- end }}
{{- if eq $kind "StatefulSet" }}
{{- $reasons := list }}
{{- if $p.staticMembership }}{{ $reasons = append $reasons "staticMembership: true" }}{{ end }}
{{- if $state.enabled }}{{ $reasons = append $reasons "state.enabled: true" }}{{ end }}
{{- $why = join ", " $reasons }}
{{- if $state.enabled }}
{{- $cost = "every pod stops at once, and every new pod starts on an empty state volume and restores its tables from the whole changelog" }}
{{- end }}
{{- end }}
{{- fail (printf "pipelines[%s]: it runs as %s/%s and these values make it a %s (%s). helm would replace the workload: %s. To switch on purpose, in a quiet period, set pipelines[%s].allowKindChange: true for this upgrade (%s)" $p.name $other $name $kind $why $cost $p.name $docs) }}
{{- end }}
{{- end }}
{{- if eq $kind "StatefulSet" }}
{{- with include "streamkit.lookupWorkload" (dict "root" $root "kind" "StatefulSet" "namespace" $namespace "name" $name) | fromYaml }}
{{- $claim := dict }}
{{- range dig "spec" "volumeClaimTemplates" (list) . }}
{{- if eq (dig "metadata" "name" "" .) "state" }}{{ $claim = . }}{{ end }}
{{- end }}
{{- $refused := printf "and the API server refuses any change of a StatefulSet's volumeClaimTemplates" }}
{{- if and $state.enabled (not $claim) }}
{{- fail (printf "pipelines[%s].state.enabled: StatefulSet/%s runs without a state volume, %s. To add one, delete the StatefulSet object but not its pods (%s), upgrade again, then replace the pods one at a time (kubectl delete pod): each comes back with a new, empty volume (%s)" $p.name $name $refused $orphan $docs) }}
{{- else if and $claim (not $state.enabled) }}
{{- fail (printf "pipelines[%s].state.enabled: StatefulSet/%s has a state volume per pod, %s. Keep state.enabled: true, or delete the StatefulSet object but not its pods (%s) and upgrade again; its PersistentVolumeClaims stay until you delete them (%s)" $p.name $name $refused $orphan $docs) }}
{{- else if $claim }}
{{- $liveSize := dig "spec" "resources" "requests" "storage" "" $claim | toString }}
{{- if ne (include "streamkit.quantityBytes" $liveSize) (include "streamkit.quantityBytes" $state.size) }}
{{- fail (printf "pipelines[%s].state.size: StatefulSet/%s's volume claims were made with %s, not %s, %s. Keep size: %s; to grow the volumes, expand each PersistentVolumeClaim, then delete the StatefulSet object but not its pods (%s) and upgrade with the new size (%s)" $p.name $name $liveSize (toString $state.size) $refused $liveSize $orphan $docs) }}
{{- end }}
{{- $liveClass := dig "spec" "storageClassName" "" $claim | toString }}
{{- if ne $liveClass (toString $state.storageClassName) }}
{{- $describe := dict "" "the cluster default (\"\")" }}
{{- fail (printf "pipelines[%s].state.storageClassName: StatefulSet/%s's volume claims use %s, not %s, %s. Keep storageClassName: %q; moving the volumes to another class is a replacement (%s)" $p.name $name (get $describe $liveClass | default (quote $liveClass)) (get $describe (toString $state.storageClassName) | default (quote $state.storageClassName)) $refused $liveClass $docs) }}
{{- end }}
{{- $liveModes := dig "spec" "accessModes" (list) $claim }}
{{- if ne (toJson $liveModes) (toJson $state.accessModes) }}
{{- fail (printf "pipelines[%s].state.accessModes: StatefulSet/%s's volume claims use %s, not %s, %s. Keep accessModes: %s (%s)" $p.name $name (toJson $liveModes) (toJson $state.accessModes) $refused (toJson $liveModes) $docs) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
