{{/*
Pieces shared by the pipeline pods (Deployment, StatefulSet) and the backfill
Jobs: Kafka connection env, volumes, security and scheduling.
*/}}

{{/*
The Kafka connection as STREAMKIT_* env. Secrets are only ever referenced
(secretKeyRef) or mounted; no credential is rendered as a value. The SASL
credentials and the TLS key's passphrase are files of mounted Secrets, named
by STREAMKIT_<SETTING>_FILE: a file is not in the process environment
(/proc/<pid>/environ, crash dumps, `env` in a debug shell).
Call with the root context, or with (dict "root" $ "sessionTimeoutMs" N) to
give a pipeline's pods another session timeout (static members).
*/}}
{{- define "streamkit.kafkaEnv" -}}
{{- $root := ternary .root . (hasKey . "root") }}
{{- $kafka := $root.Values.kafka -}}
{{- $session := ternary .sessionTimeoutMs $kafka.sessionTimeoutMs (hasKey . "sessionTimeoutMs") -}}
- name: STREAMKIT_BROKERS
  value: {{ $kafka.brokers | quote }}
- name: STREAMKIT_GROUP_PROTOCOL
  value: {{ $kafka.groupProtocol | quote }}
{{- if $kafka.schemaRegistryUrl }}
- name: STREAMKIT_SCHEMA_REGISTRY_URL
  value: {{ $kafka.schemaRegistryUrl | quote }}
{{- end }}
{{- with $kafka.schemaRegistry.existingSecret }}
{{- if not $kafka.schemaRegistryUrl }}
{{- fail "kafka.schemaRegistry.existingSecret is set but kafka.schemaRegistryUrl is empty: set the registry URL (without credentials) too" }}
{{- end }}
- name: STREAMKIT_SCHEMA_REGISTRY_USER_INFO
  valueFrom:
    secretKeyRef:
      name: {{ . | quote }}
      key: {{ $kafka.schemaRegistry.userInfoKey | quote }}
{{- end }}
- name: STREAMKIT_SESSION_TIMEOUT_MS
  value: {{ $session | toString | quote }}
{{- /* Empty renders nothing, so leaving it unset changes no pod or Job spec. */}}
{{- if $kafka.replication }}
- name: STREAMKIT_REPLICATION
  value: {{ $kafka.replication | toString | quote }}
{{- end }}
- name: STREAMKIT_SECURITY_PROTOCOL
  value: {{ $kafka.securityProtocol | quote }}
{{- if hasPrefix "SASL_" $kafka.securityProtocol }}
{{- if not $kafka.sasl.existingSecret }}
{{- fail "kafka.sasl.existingSecret is required with a SASL_* securityProtocol: name an existing Secret holding the username and password" }}
{{- end }}
{{- if eq $kafka.sasl.usernameKey $kafka.sasl.passwordKey }}
{{- fail "kafka.sasl.usernameKey and kafka.sasl.passwordKey name the same key: the username and the password are two keys of the Secret" }}
{{- end }}
{{- if and $kafka.tls.existingSecret (eq (clean $kafka.sasl.mountPath) (clean $kafka.tls.mountPath)) }}
{{- fail "kafka.sasl.mountPath and kafka.tls.mountPath are the same directory: two Secrets cannot be mounted there; choose another for one of them" }}
{{- end }}
- name: STREAMKIT_SASL_MECHANISM
  value: {{ $kafka.sasl.mechanism | quote }}
- name: STREAMKIT_SASL_USERNAME_FILE
  value: {{ printf "%s/%s" $kafka.sasl.mountPath $kafka.sasl.usernameKey | quote }}
- name: STREAMKIT_SASL_PASSWORD_FILE
  value: {{ printf "%s/%s" $kafka.sasl.mountPath $kafka.sasl.passwordKey | quote }}
{{- end }}
{{- with $kafka.tls }}
{{- if .existingSecret }}
- name: STREAMKIT_SSL_CA
  value: {{ printf "%s/%s" .mountPath .caKey | quote }}
{{- if .certKey }}
- name: STREAMKIT_SSL_CERTIFICATE
  value: {{ printf "%s/%s" .mountPath .certKey | quote }}
- name: STREAMKIT_SSL_KEY
  value: {{ printf "%s/%s" .mountPath .keyKey | quote }}
{{- end }}
{{- if .keyPasswordKey }}
- name: STREAMKIT_SSL_KEY_PASSWORD_FILE
  value: {{ printf "%s/%s" .mountPath .keyPasswordKey | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- range $property, $value := $kafka.extraConfig }}
- name: {{ printf "STREAMKIT_KAFKA_%s" ($property | replace "." "_" | upper) }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{/*
Env every streamkit process gets: the Kafka connection, the shutdown deadline,
the log format, then the release-wide extraEnv. Call as streamkit.kafkaEnv.
*/}}
{{- define "streamkit.commonEnv" -}}
{{- $root := ternary .root . (hasKey . "root") }}
{{ include "streamkit.kafkaEnv" . }}
- name: STREAMKIT_SHUTDOWN_TIMEOUT
  value: {{ $root.Values.worker.shutdownTimeoutSeconds | toString | quote }}
- name: STREAMKIT_LOG_FORMAT
  value: {{ $root.Values.worker.logFormat | quote }}
{{- with $root.Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
terminationGracePeriodSeconds: the drain deadline plus a margin, so SIGKILL
never lands inside the drain. With processes (STREAMKIT_PROCESSES above 1 or
"auto") the supervisor forwards SIGTERM to every worker and kills those still
running 5 s after shutdownTimeoutSeconds: that fits in the margin (15 by
default, 10 s left for the supervisor to reap and exit), and even at the
schema's minimum of 5 the kubelet's SIGKILL lands no earlier than the
supervisor's own, so no worker loses drain time to it.
*/}}
{{- define "streamkit.gracePeriod" -}}
{{- add .Values.worker.shutdownTimeoutSeconds .Values.worker.shutdownMarginSeconds }}
{{- end }}

{{/*
Volumes: an emptyDir for /tmp (the root filesystem is read-only), the SASL
Secret (only its username and password keys) with a SASL_* protocol, and the
TLS Secret when one is configured.
*/}}
{{- define "streamkit.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit | quote }}
{{- if and (hasPrefix "SASL_" .Values.kafka.securityProtocol) .Values.kafka.sasl.existingSecret }}
- name: kafka-sasl
  secret:
    secretName: {{ .Values.kafka.sasl.existingSecret | quote }}
    items:
      - key: {{ .Values.kafka.sasl.usernameKey | quote }}
        path: {{ .Values.kafka.sasl.usernameKey | quote }}
      - key: {{ .Values.kafka.sasl.passwordKey | quote }}
        path: {{ .Values.kafka.sasl.passwordKey | quote }}
    defaultMode: 0440
{{- end }}
{{- if .Values.kafka.tls.existingSecret }}
- name: kafka-tls
  secret:
    secretName: {{ .Values.kafka.tls.existingSecret | quote }}
    # Owner and group (fsGroup) read-only; the key must not be world-readable.
    defaultMode: 0440
{{- end }}
{{- end }}

{{- define "streamkit.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if and (hasPrefix "SASL_" .Values.kafka.securityProtocol) .Values.kafka.sasl.existingSecret }}
- name: kafka-sasl
  mountPath: {{ .Values.kafka.sasl.mountPath | quote }}
  readOnly: true
{{- end }}
{{- if .Values.kafka.tls.existingSecret }}
- name: kafka-tls
  mountPath: {{ .Values.kafka.tls.mountPath | quote }}
  readOnly: true
{{- end }}
{{- end }}

{{/*
Pod-level fields shared by pipelines and backfills. Call with
(dict "root" $), or (dict "root" $ "securityContext" $podSecurityContext)
to replace podSecurityContext (a stateful pipeline's pods add to it).
*/}}
{{- define "streamkit.podCommon" -}}
{{- $root := .root }}
{{- $securityContext := ternary .securityContext $root.Values.podSecurityContext (hasKey . "securityContext") -}}
serviceAccountName: {{ include "streamkit.serviceAccountName" $root }}
# Workers never call the Kubernetes API: no token in the pod.
automountServiceAccountToken: false
terminationGracePeriodSeconds: {{ include "streamkit.gracePeriod" $root }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $securityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumes:
  {{- include "streamkit.volumes" $root | nindent 2 }}
{{- end }}

{{/*
Pod metadata (labels + annotations). Call with (dict "root" $ "labels" $labels).
*/}}
{{- define "streamkit.podMetadata" -}}
labels:
  {{- .labels | nindent 2 }}
  {{- with .root.Values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with .root.Values.podAnnotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
The pod template of a pipeline, for its Deployment or StatefulSet.
Call with (dict "root" $ "pipeline" $pipeline).
*/}}
{{- define "streamkit.pipeline.podTemplate" -}}
{{- $root := .root }}
{{- $p := .pipeline }}
{{- $port := int $root.Values.worker.httpPort }}
{{- $probes := $root.Values.worker.probes }}
{{- $kind := include "streamkit.pipeline.kind" . }}
{{- $state := include "streamkit.pipeline.state" . | fromYaml }}
{{- $securityContext := $root.Values.podSecurityContext | default dict }}
{{- /* fsGroup (required with state, see streamkit.validate) makes the
state volume group-writable for the worker, as it makes the TLS files
group-readable. OnRootMismatch: the kubelet re-owns the volume's files only
when its root is not already right, instead of walking a large store on
every pod start. */}}
{{- if and $state.enabled (not (hasKey $securityContext "fsGroupChangePolicy")) }}
{{- $securityContext = merge (dict "fsGroupChangePolicy" "OnRootMismatch") $securityContext }}
{{- end -}}
metadata:
  {{- include "streamkit.podMetadata" (dict "root" $root "labels" (include "streamkit.pipeline.podLabels" .)) | nindent 2 }}
spec:
  {{- include "streamkit.podCommon" (dict "root" $root "securityContext" $securityContext) | nindent 2 }}
  {{- with $root.Values.topologySpreadConstraints }}
  {{- $selector := dict "matchLabels" (include "streamkit.pipeline.selectorLabels" (dict "root" $root "pipeline" $p) | fromYaml) }}
  {{- $constraints := list }}
  {{- /* A constraint without labelSelector spreads this pipeline's pods;
  in a Deployment, those of one ReplicaSet (pod-template-hash), so that the
  old pods still running during a rollout do not skew where new ones go. */}}
  {{- $own := dict "labelSelector" $selector }}
  {{- if eq $kind "Deployment" }}
  {{- $_ := set $own "matchLabelKeys" (list "pod-template-hash") }}
  {{- end }}
  {{- range . }}
  {{- $constraints = append $constraints (ternary . (merge (deepCopy .) $own) (hasKey . "labelSelector")) }}
  {{- end }}
  topologySpreadConstraints:
    {{- toYaml $constraints | nindent 4 }}
  {{- end }}
  containers:
    - name: worker
      image: {{ include "streamkit.image" $root | quote }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      args:
        - run
        - {{ $p.module | quote }}
        {{- range $p.agents }}
        - --agent
        - {{ . | quote }}
        {{- end }}
        - --http-port
        - {{ $port | quote }}
        {{- range $p.extraArgs }}
        - {{ . | quote }}
        {{- end }}
      env:
        {{- /* A static member's partitions wait for it while it is away, so its
        session has to outlast a reschedule (drain, image pull, start), which
        often takes longer than the 45 s that suits dynamic members. */}}
        {{- $session := ternary $root.Values.kafka.staticSessionTimeoutMs $root.Values.kafka.sessionTimeoutMs (default false $p.staticMembership) }}
        {{- include "streamkit.commonEnv" (dict "root" $root "sessionTimeoutMs" $session) | nindent 8 }}
        # The worker's HTTP server listens on loopback unless told otherwise;
        # the kubelet's probes and Prometheus come from outside the pod.
        - name: STREAMKIT_HTTP_HOST
          value: {{ $root.Values.worker.httpHost | quote }}
        {{- /* Empty renders nothing (the worker's 60 s), so leaving it unset
        changes no pod spec. */}}
        {{- with $root.Values.worker.livenessTimeoutSeconds }}
        - name: STREAMKIT_LIVENESS_TIMEOUT
          value: {{ . | toString | quote }}
        {{- end }}
        {{- if $p.groupId }}
        - name: STREAMKIT_GROUP_ID
          value: {{ $p.groupId | quote }}
        {{- end }}
        {{- if $p.staticMembership }}
        # Static membership: the pod name (<statefulset>-<ordinal>) is stable
        # across restarts, so the broker hands the same partitions back.
        - name: STREAMKIT_GROUP_INSTANCE_ID
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        {{- end }}
        {{- /* More than one: the container's main process is a supervisor of
        that many workers, each a member of the group (with static membership,
        instance id <pod name>-<i>), behind one /livez /readyz /metrics on the
        http port. Empty renders nothing (one process), so leaving it unset
        changes no pod spec. */}}
        {{- with include "streamkit.pipeline.processes" . }}
        - name: STREAMKIT_PROCESSES
          value: {{ . | quote }}
        {{- end }}
        {{- with $p.processingGuarantee }}
        - name: STREAMKIT_PROCESSING_GUARANTEE
          value: {{ . | quote }}
        {{- end }}
        {{- if $state.enabled }}
        # The tables' local stores, on the pod's own volume (claim "state").
        - name: STREAMKIT_STATE_DIR
          value: {{ $state.mountPath | quote }}
        {{- end }}
        {{- with $p.env }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        - name: http
          containerPort: {{ $port }}
          protocol: TCP
      startupProbe:
        httpGet:
          path: /livez
          port: http
        periodSeconds: 5
        timeoutSeconds: {{ $probes.timeoutSeconds }}
        failureThreshold: {{ max 1 (div $probes.startupTimeoutSeconds 5) }}
      livenessProbe:
        httpGet:
          path: /livez
          port: http
        periodSeconds: {{ $probes.livenessPeriodSeconds }}
        timeoutSeconds: {{ $probes.timeoutSeconds }}
        failureThreshold: {{ $probes.livenessFailureThreshold }}
      readinessProbe:
        httpGet:
          path: /readyz
          port: http
        periodSeconds: {{ $probes.readinessPeriodSeconds }}
        timeoutSeconds: {{ $probes.timeoutSeconds }}
        failureThreshold: {{ $probes.readinessFailureThreshold }}
      resources:
        {{- toYaml (default $root.Values.defaultResources $p.resources) | nindent 8 }}
      {{- with $root.Values.securityContext }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      volumeMounts:
        {{- include "streamkit.volumeMounts" $root | nindent 8 }}
        {{- if $state.enabled }}
        - name: state
          mountPath: {{ $state.mountPath | quote }}
        {{- end }}
{{- end }}
