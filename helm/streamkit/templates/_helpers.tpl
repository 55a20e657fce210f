{{/*
Names and labels, after `helm create`.
*/}}

{{/*
Expand the name of the chart.
*/}}
{{- define "streamkit.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name.
Truncated to 40 characters to leave room for "-<pipeline>": workload names
are cut at 52, the most a StatefulSet may have (its pods carry a
controller-revision-hash label of name + 11 characters, limited to 63).
streamkit.validate fails if a cut makes two names collide.
If release name contains chart name it will be used as a full name.
*/}}
{{- define "streamkit.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Create chart name and version as used by the chart label.
*/}}
{{- define "streamkit.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "streamkit.labels" -}}
helm.sh/chart: {{ include "streamkit.chart" . }}
{{ include "streamkit.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels: every pod of the release (pipelines and backfills).
*/}}
{{- define "streamkit.selectorLabels" -}}
app.kubernetes.io/name: {{ include "streamkit.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The name of the service account to use.
*/}}
{{- define "streamkit.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "streamkit.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image reference.
*/}}
{{- define "streamkit.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Per-pipeline names and labels. Call with (dict "root" $ "pipeline" $pipeline).
*/}}
{{- define "streamkit.pipeline.fullname" -}}
{{- printf "%s-%s" (include "streamkit.fullname" .root) .pipeline.name | trunc 52 | trimSuffix "-" }}
{{- end }}

{{- define "streamkit.pipeline.selectorLabels" -}}
{{ include "streamkit.selectorLabels" .root }}
app.kubernetes.io/component: pipeline
streamkit.io/pipeline: {{ .pipeline.name }}
{{- end }}

{{- define "streamkit.pipeline.labels" -}}
{{ include "streamkit.labels" .root }}
app.kubernetes.io/component: pipeline
streamkit.io/pipeline: {{ .pipeline.name }}
{{- end }}

{{/*
Labels of a pipeline's pods: the selector labels only. No helm.sh/chart or
app.kubernetes.io/version here: a pod template that changed with the chart
version would roll every pod of every pipeline (a rebalance per pod) on a
chart bump that changed nothing the pods run.
*/}}
{{- define "streamkit.pipeline.podLabels" -}}
{{ include "streamkit.pipeline.selectorLabels" . }}
{{- end }}

{{/*
Per-backfill names and labels. Call with (dict "root" $ "backfill" $backfill).
Backfill pods carry no streamkit.io/pipeline label, so no pipeline's
Deployment, Service or PodDisruptionBudget selects them.
*/}}
{{- define "streamkit.backfill.fullname" -}}
{{- printf "%s-backfill-%s" (include "streamkit.fullname" .root) .backfill.name | trunc 52 | trimSuffix "-" }}
{{- end }}

{{- define "streamkit.backfill.labels" -}}
{{ include "streamkit.labels" .root }}
app.kubernetes.io/component: backfill
streamkit.io/backfill: {{ .backfill.name }}
{{- end }}

{{/*
Labels of a backfill's pods: stable ones only, as for pipeline pods (a Job's
pod template is immutable, so a version label there would also make the Job
differ on every chart bump).
*/}}
{{- define "streamkit.backfill.podLabels" -}}
{{ include "streamkit.selectorLabels" .root }}
app.kubernetes.io/component: backfill
streamkit.io/backfill: {{ .backfill.name }}
{{- end }}

{{/*
Whether a pipeline's replica count is managed by KEDA.
*/}}
{{- define "streamkit.pipeline.autoscaled" -}}
{{- if .pipeline.autoscaling | default dict | dig "enabled" false }}true{{ end }}
{{- end }}

{{/*
A pipeline workload's spec.replicas line. Without autoscaling: the values'
count. With it, KEDA's HPA owns the count, but leaving the field out is not
neutral: on the upgrade that turns autoscaling on, helm's three-way patch
deletes a field the previous manifest had, and the API server defaults it
to 1, stopping all pods but one at once. So while the workload exists, its
live count is rendered back (a no-op patch); only when nothing is live (a
fresh install, or rendering without a cluster) is the field left out. On a
kind change (allowKindChange) the new workload starts with the count of the
one it replaces.
Call with (dict "root" $ "pipeline" $pipeline).
*/}}
{{- define "streamkit.pipeline.replicas" -}}
{{- if include "streamkit.pipeline.autoscaled" . }}
{{- $kind := include "streamkit.pipeline.kind" . }}
{{- $name := include "streamkit.pipeline.fullname" . }}
{{- $live := include "streamkit.lookupWorkload" (dict "root" .root "kind" $kind "namespace" .root.Release.Namespace "name" $name) | fromYaml }}
{{- if not $live }}
{{- $other := ternary "Deployment" "StatefulSet" (eq $kind "StatefulSet") }}
{{- $live = include "streamkit.lookupWorkload" (dict "root" .root "kind" $other "namespace" .root.Release.Namespace "name" $name) | fromYaml }}
{{- end }}
{{- $replicas := dig "spec" "replicas" "" $live }}
{{- if ne (toString $replicas) "" }}
replicas: {{ int $replicas }}
{{- end }}
{{- else }}
replicas: {{ .pipeline.replicas }}
{{- end }}
{{- end }}

{{/*
A pipeline's worker processes per pod (STREAMKIT_PROCESSES), as a string:
pipelines[].processes if given, else worker.processes; "" when neither is
(one process, the worker's default, and no env, so leaving it unset changes
no pod spec). Fails on anything but a positive integer or "auto", naming the
value; the schema only admits an integer or a string, so that 0, -1 or
"four" reach this message instead of a bare type error.
Call with (dict "root" $ "pipeline" $pipeline).
*/}}
{{- define "streamkit.pipeline.processes" -}}
{{- /* toString, not default: an explicit 0 is a value to refuse, not unset;
a null (left in a pipelines entry) prints as <nil> and counts as unset. */}}
{{- $worker := toString (dig "processes" "" (.root.Values.worker | default dict)) | replace "<nil>" "" }}
{{- $own := toString (get .pipeline "processes") | replace "<nil>" "" }}
{{- $checks := list (list "worker.processes" $worker) (list (printf "pipelines[%s].processes" .pipeline.name) $own) }}
{{- range $checks }}
{{- $text := index . 1 }}
{{- if and $text (not (regexMatch "^([1-9][0-9]*|auto)$" $text)) }}
{{- fail (printf "%s: %q is not a number of processes; use a positive integer (e.g. 4) or \"auto\" (the container's usable cores), or leave it empty for one process" (index . 0) $text) }}
{{- end }}
{{- end }}
{{- default $worker $own }}
{{- end }}

{{/*
Consumer group members per pod, for the partition arithmetic: the number
of processes; 1 when unset. For "auto" the chart cannot know (the
container's usable cores, counted when the pod starts: its CPU limit rounded
up, or fewer with a cpuset), so 1, the least it can be: checks on it are a
floor, and docs/deploy.md says so.
Call with (dict "root" $ "pipeline" $pipeline).
*/}}
{{- define "streamkit.pipeline.membersPerPod" -}}
{{- $processes := include "streamkit.pipeline.processes" . }}
{{- if regexMatch "^[0-9]+$" $processes }}{{ $processes }}{{ else }}1{{ end }}
{{- end }}

{{/*
A pipeline's autoscaling settings with defaults filled in, as YAML (use with
fromYaml). Entries of `pipelines` replace the list in values.yaml, so they do
not inherit its defaults; hasKey keeps an explicit 0 (e.g. minReplicas: 0).
maxReplicas defaults to, and is capped at, the most pods whose members all
get a partition: partitions / processes (KEDA counts pods, each of which is
`processes` members of the group).
Call with (dict "root" $ "pipeline" $pipeline).
*/}}
{{- define "streamkit.pipeline.autoscaling" -}}
{{- $given := .pipeline.autoscaling | default dict }}
{{- $cap := div (int .pipeline.partitions) (int (include "streamkit.pipeline.membersPerPod" .)) }}
{{- $defaults := dict "topic" "" "lagThreshold" 1000 "minReplicas" 1 "maxReplicas" $cap "pollingInterval" 30 "cooldownPeriod" 300 "scaleDownStabilizationSeconds" 300 "activationLagThreshold" 0 "allowStaticScaleToZero" false }}
{{- $out := dict }}
{{- range $key, $default := $defaults }}
{{- $_ := set $out $key (ternary (get $given $key) $default (hasKey $given $key)) }}
{{- end }}
{{- $_ := set $out "maxReplicas" (min (int $out.maxReplicas) $cap) }}
{{- toYaml $out }}
{{- end }}

{{/*
Checks that values.schema.json cannot express: unique names, replicas (times
processes) within the partition count, a CPU limit for processes "auto", a
group id for the KEDA trigger, and a state volume the worker can write to, at
a path of its own. Rendered (empty) from every workload template so each
`helm template` runs them.
*/}}
{{- define "streamkit.validate" -}}
{{- $seen := dict }}
{{- range .Values.pipelines }}
{{- if hasKey $seen .name }}
{{- fail (printf "pipelines: the name %q is used twice; pipeline names must be unique" .name) }}
{{- end }}
{{- $_ := set $seen .name true }}
{{- $pipelineName := include "streamkit.pipeline.fullname" (dict "root" $ "pipeline" .) }}
{{- if hasKey $seen (printf "fullname:%s" $pipelineName) }}
{{- fail (printf "pipelines[%s]: its resource name %q, truncated to 52 characters, collides with another pipeline's; shorten the names" .name $pipelineName) }}
{{- end }}
{{- $_ := set $seen (printf "fullname:%s" $pipelineName) true }}
{{- $ctx := dict "root" $ "pipeline" . }}
{{- $processes := include "streamkit.pipeline.processes" $ctx }}
{{- $members := int (include "streamkit.pipeline.membersPerPod" $ctx) }}
{{- /* Every process is a member of the group: one pod of more processes
than partitions already has members that get nothing. */}}
{{- if gt $members (int .partitions) }}
{{- fail (printf "pipelines[%s]: processes (%d) exceeds partitions (%d); each process is a member of the group, and a member beyond the partition count is assigned nothing" .name $members (int .partitions)) }}
{{- end }}
{{- if eq $processes "auto" }}
{{- $resources := default $.Values.defaultResources .resources | default dict }}
{{- if not (dig "limits" "cpu" "" $resources) }}
{{- fail (printf "pipelines[%s]: processes \"auto\" starts one process per usable core, and without a CPU limit (cgroup quota) that is every core of the node the pod lands on, each process with its own memory; set resources.limits.cpu (whole cores, equal to requests.cpu), or a number of processes" .name) }}
{{- end }}
{{- end }}
{{- if .autoscaling | default dict | dig "enabled" false }}
{{- $scaling := include "streamkit.pipeline.autoscaling" $ctx | fromYaml }}
{{- if gt (int $scaling.minReplicas) (int $scaling.maxReplicas) }}
{{- if gt $members 1 }}
{{- fail (printf "pipelines[%s].autoscaling: minReplicas (%d) exceeds the effective maxReplicas (%d = min(maxReplicas, partitions / processes = %d / %d))" .name (int $scaling.minReplicas) (int $scaling.maxReplicas) (int .partitions) $members) }}
{{- end }}
{{- fail (printf "pipelines[%s].autoscaling: minReplicas (%d) exceeds the effective maxReplicas (%d = min(maxReplicas, partitions))" .name (int $scaling.minReplicas) (int $scaling.maxReplicas)) }}
{{- end }}
{{- /* Scale to zero costs every pipeline its offsets after
offsets.retention.minutes and its timers; static members add a session
timeout of unread partitions on every scale-down, since they never leave the
group. Those are choices the chart cannot make (it sees neither timers nor
retention), so it asks for them to be made in the values, where a review
sees them, rather than refusing a setup that suits a rarely used stateful
pipeline. */}}
{{- if and (eq (int $scaling.minReplicas) 0) (default false .staticMembership) (not $scaling.allowStaticScaleToZero) }}
{{- fail (printf "pipelines[%s].autoscaling: minReplicas 0 with staticMembership: each scale-down leaves the removed pods' partitions unread for kafka.staticSessionTimeoutMs, the group's offsets expire after the brokers' offsets.retention.minutes at zero, and timers stop (docs/deploy.md, \"Scaling to zero\"). Set autoscaling.allowStaticScaleToZero: true to accept that, or minReplicas: 1" .name) }}
{{- end }}
{{- else if gt (int .replicas) (int .partitions) }}
{{- fail (printf "pipelines[%s]: replicas (%d) exceeds partitions (%d); a consumer beyond the partition count is assigned nothing" .name (int .replicas) (int .partitions)) }}
{{- else if gt (mul (int .replicas) $members) (int .partitions) }}
{{- fail (printf "pipelines[%s]: replicas * processes (%d * %d = %d) exceeds partitions (%d); each process is a member of the group, and a member beyond the partition count is assigned nothing" .name (int .replicas) $members (mul (int .replicas) $members) (int .partitions)) }}
{{- end }}
{{- if and (.autoscaling | default dict | dig "enabled" false) (not .groupId) }}
{{- fail (printf "pipelines[%s]: autoscaling needs groupId, the consumer group whose lag KEDA reads" .name) }}
{{- end }}
{{- $state := include "streamkit.pipeline.state" (dict "pipeline" .) | fromYaml }}
{{- if $state.enabled }}
{{- if not (hasKey ($.Values.podSecurityContext | default dict) "fsGroup") }}
{{- fail (printf "pipelines[%s].state: podSecurityContext.fsGroup is not set, so the state volume would stay owned by root and the worker could not write to it; set fsGroup (values.yaml: 10001, the image's group)" .name) }}
{{- end }}
{{- $taken := dict "/tmp" "the /tmp emptyDir" }}
{{- if $.Values.kafka.tls.existingSecret }}
{{- $_ := set $taken $.Values.kafka.tls.mountPath "kafka.tls.mountPath" }}
{{- end }}
{{- if and (hasPrefix "SASL_" $.Values.kafka.securityProtocol) $.Values.kafka.sasl.existingSecret }}
{{- $_ := set $taken $.Values.kafka.sasl.mountPath "kafka.sasl.mountPath" }}
{{- end }}
{{- if hasKey $taken $state.mountPath }}
{{- fail (printf "pipelines[%s].state.mountPath: %s is already %s; choose another directory" .name $state.mountPath (get $taken $state.mountPath)) }}
{{- end }}
{{- end }}
{{- end }}
{{- $seen = dict }}
{{- range .Values.backfills }}
{{- if hasKey $seen .name }}
{{- fail (printf "backfills: the name %q is used twice; backfill names must be unique" .name) }}
{{- end }}
{{- $_ := set $seen .name true }}
{{- $jobName := include "streamkit.backfill.fullname" (dict "root" $ "backfill" .) }}
{{- if hasKey $seen (printf "fullname:%s" $jobName) }}
{{- fail (printf "backfills[%s]: its Job name %q, truncated to 52 characters, collides with another backfill's; shorten the names" .name $jobName) }}
{{- end }}
{{- $_ := set $seen (printf "fullname:%s" $jobName) true }}
{{- $backfill := . }}
{{- range $.Values.pipelines }}
{{- if and $backfill.group .groupId (eq $backfill.group .groupId) }}
{{- fail (printf "backfills[%s]: group %q is pipelines[%s]'s consumer group; the replay's commits would move the live pipeline's offsets. Leave group out (a group of its own is derived) or name another" $backfill.name $backfill.group .name) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
