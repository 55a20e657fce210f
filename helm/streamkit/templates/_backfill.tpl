{{/*
A backfill Job's immutable part (Kubernetes refuses to patch spec.template,
and the chart treats podFailurePolicy the same way), rendered once: the Job
name carries its hash. Call with (dict "root" $ "backfill" $backfill).
*/}}
{{- define "streamkit.backfill.immutableSpec" -}}
{{- $root := .root }}
{{- $backfill := .backfill }}
{{- $ctx := . -}}
# A node drain or preemption is not the replay's fault: retry without
# spending backoffLimit. A retry resumes the window where the last try
# stopped (its group keeps the commits and the range fixed by the first run;
# an interrupted replay exits 3). A usage error (exit 2) fails the same way
# every time: fail the Job at once instead of retrying it; so does exit 4
# (not confirmed), which the --yes below rules out.
podFailurePolicy:
  rules:
    - action: Ignore
      onPodConditions:
        - type: DisruptionTarget
          status: "True"
    - action: FailJob
      onExitCodes:
        containerName: replay
        operator: In
        values: [2, 4]
template:
  metadata:
    {{- include "streamkit.podMetadata" (dict "root" $root "labels" (include "streamkit.backfill.podLabels" $ctx)) | nindent 4 }}
  spec:
    restartPolicy: Never
    {{- include "streamkit.podCommon" (dict "root" $root) | nindent 4 }}
    containers:
      - name: replay
        image: {{ include "streamkit.image" $root | quote }}
        imagePullPolicy: {{ $root.Values.image.pullPolicy }}
        # A Job has no terminal to confirm on: --yes. Without a redirect the
        # agent emits to its live output topics, which the replay refuses
        # unless told (--to-live-topics); with a redirect that leaves an
        # output live, add --to-live-topics to extraArgs. from and to are
        # required by the schema, so --whole-topic is never needed.
        args:
          - replay
          - {{ $backfill.module | quote }}
          - --agent
          - {{ $backfill.agent | quote }}
          - --from
          - {{ $backfill.from | quote }}
          - --to
          - {{ $backfill.to | quote }}
          - --yes
          {{- if not $backfill.redirect }}
          - --to-live-topics
          {{- end }}
          {{- with $backfill.partitions }}
          - --partitions
          - {{ join "," . | quote }}
          {{- end }}
          {{- range $source, $destination := $backfill.redirect }}
          - --redirect
          - {{ printf "%s=%s" $source $destination | quote }}
          {{- end }}
          {{- with $backfill.group }}
          - --group
          - {{ . | quote }}
          {{- end }}
          {{- with $backfill.ratePerSecond }}
          - --rate
          - {{ printf "%d/s" (int .) | quote }}
          {{- end }}
          {{- range $backfill.extraArgs }}
          - {{ . | quote }}
          {{- end }}
        env:
          {{- include "streamkit.commonEnv" $root | nindent 10 }}
          {{- with $backfill.env }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
        resources:
          {{- toYaml (default $root.Values.defaultResources $backfill.resources) | nindent 10 }}
        {{- with $root.Values.securityContext }}
        securityContext:
          {{- toYaml . | nindent 10 }}
        {{- end }}
        volumeMounts:
          {{- include "streamkit.volumeMounts" $root | nindent 10 }}
{{- end }}

{{/*
The Job name: "<fullname>-backfill-<name>-<hash>", the hash covering the
immutable part above (image, env, args, resources, security, labels). A
change that reaches the pod template is a new Job with a new name: helm
creates it instead of patching the old one, which the API server would
refuse (failing the whole upgrade). The prefix is cut at 52 characters to
leave room for "-" and 10 hex digits within the 63 a Job name may have.
*/}}
{{- define "streamkit.backfill.jobName" -}}
{{- $hash := include "streamkit.backfill.immutableSpec" . | sha256sum | trunc 10 }}
{{- printf "%s-%s" (include "streamkit.backfill.fullname" .) $hash }}
{{- end }}
