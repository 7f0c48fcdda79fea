{{/* Chart name and fully qualified names. */}}
{{- define "whouses.name" -}}{{ .Chart.Name }}{{- end -}}
{{- define "whouses.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}{{ .Release.Name | trunc 50 | trimSuffix "-" }}{{- else -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" }}{{- end -}}
{{- end -}}
{{- define "whouses.collector" -}}{{ include "whouses.fullname" . }}-collector{{- end -}}
{{- define "whouses.webhook" -}}{{ include "whouses.fullname" . }}-webhook{{- end -}}
{{- define "whouses.image" -}}{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}{{- end -}}
{{- define "whouses.tokenSecret" -}}{{ .Values.tokens.existingSecret | default (printf "%s-tokens" (include "whouses.fullname" .)) }}{{- end -}}
{{- define "whouses.serviceAccount" -}}{{ if .Values.serviceAccount.create }}{{ .Values.serviceAccount.name | default (include "whouses.fullname" .) }}{{ else }}{{ .Values.serviceAccount.name | default "default" }}{{ end }}{{- end -}}
{{- define "whouses.collectorScheme" -}}{{ if .Values.collector.tls.enabled }}https{{ else }}http{{ end }}{{- end -}}
{{- define "whouses.collectorUrl" -}}{{ include "whouses.collectorScheme" . }}://{{ include "whouses.collector" . }}.{{ .Release.Namespace }}.svc:{{ .Values.service.port }}{{- end -}}
{{/* The Secret with the collector's tls.crt, tls.key and ca.crt (generated or from cert-manager). */}}
{{- define "whouses.collectorTlsSecret" -}}{{ include "whouses.collector" . }}-tls{{- end -}}
{{/* The names the collector's certificate is valid for: its Service, and loopback for port-forward. */}}
{{- define "whouses.collectorDnsNames" -}}
{{- $name := include "whouses.collector" . -}}
{{- $names := list (printf "%s.%s.svc" $name .Release.Namespace) (printf "%s.%s.svc.cluster.local" $name .Release.Namespace) (printf "%s.%s" $name .Release.Namespace) $name "localhost" -}}
{{- concat $names .Values.collector.tls.extraDnsNames | uniq | toJson -}}
{{- end -}}
{{/* The Secret holding the scoped ingest tokens file (tokens.namespaces). */}}
{{- define "whouses.scopedTokenSecret" -}}{{ include "whouses.fullname" . }}-ingest-tokens{{- end -}}

{{- define "whouses.labels" -}}
app.kubernetes.io/name: {{ include "whouses.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "whouses.selector" -}}
app.kubernetes.io/name: {{ include "whouses.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Invalid combinations fail the render with a message that says what to change. */}}
{{- define "whouses.validate" -}}
{{- if and (gt (int .Values.collector.replicas) 1) (not .Values.externalDatabase.enabled) -}}
{{- fail (printf "collector.replicas=%d needs externalDatabase.enabled (PostgreSQL): SQLite has a single writer, so the embedded database runs one replica" (int .Values.collector.replicas)) -}}
{{- end -}}
{{- if not (has .Values.collector.tls.source (list "helm" "cert-manager")) -}}
{{- fail "collector.tls.source must be \"helm\" or \"cert-manager\"" -}}
{{- end -}}
{{- if and (not .Values.tokens.fleetIngest) (not .Values.tokens.namespaces) -}}
{{- fail "tokens.fleetIngest=false needs tokens.namespaces: with no ingest token at all the collector would accept reports from anyone" -}}
{{- end -}}
{{- range $ns, $scope := .Values.tokens.namespaces -}}
{{- if not (and $scope $scope.service) -}}
{{- fail (printf "tokens.namespaces.%s needs service: a glob of the services that namespace may report for (\"*\" for any)" $ns) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.externalDatabase.enabled (not .Values.externalDatabase.existingSecret) -}}
{{- fail "externalDatabase.enabled needs externalDatabase.existingSecret (a Secret holding the database URL)" -}}
{{- end -}}
{{- if and .Values.ingress.enabled (not .Values.ingress.host) -}}
{{- fail "ingress.enabled needs ingress.host" -}}
{{- end -}}
{{- if not (has .Values.webhook.tls (list "helm" "cert-manager")) -}}
{{- fail "webhook.tls must be \"helm\" or \"cert-manager\"" -}}
{{- end -}}
{{- end -}}

{{/*
The sidecar container, for teams that add it by hand instead of using injection. From a
chart that lists whouses as a dependency (or from this chart):
  initContainers:
    {{- include "whouses.sidecar" (dict "root" $ "service" "billing" "environment" "prod") | nindent 4 }}
  volumes:
    {{- include "whouses.sidecarVolumes" (dict "root" $) | nindent 4 }}
and set HTTP_PROXY/HTTPS_PROXY=http://127.0.0.1:15001 on the app containers. From a
parent chart, the image, collector address and settings come from the whouses subchart.
The admin port (stats, metrics) listens on loopback only; the kubelet probes port 15021,
which serves only /healthz and /readyz. With collector.tls.enabled the sidecar trusts the
collector's CA, mounted from the collector's TLS Secret (only its ca.crt), which lives in
the release namespace: by hand, the app must run in that namespace (or copy the CA).

With "upstreamPort" (or through "whouses.inboundSidecar"), the same template renders the
inbound sidecar (issue 14) instead, in front of the app without iptables: it listens on
0.0.0.0:15006 and relays every call to 127.0.0.1:<upstreamPort>, counting it per name
dialed and caller address; point the Service's targetPort at 15006. "inboundHost" (the
name callers use, e.g. the old load balancer's) keys connections that name nothing
themselves (opaque TCP, TLS without SNI). Admin 127.0.0.1:15022, probes 15023, an
instance of its own (the pod's name + "/inbound").
*/}}
{{- define "whouses.sidecar" -}}
{{- $root := .root -}}
{{- if and $root.Subcharts (hasKey $root.Subcharts "whouses") -}}
{{- $root = index $root.Subcharts "whouses" -}}
{{- end -}}
{{- $in := .upstreamPort -}}
{{- $probe := ternary 15023 15021 (not (empty $in)) -}}
- name: {{ if $in }}whouses-inbound{{ else }}whouses-sidecar{{ end }}
  image: {{ include "whouses.image" $root }}
  imagePullPolicy: {{ $root.Values.image.pullPolicy }}
  command: ["/usr/local/bin/whouses-sidecar"]
  restartPolicy: Always
  {{- if $in }}
  args: ["--mode", "inbound", "--listen", "0.0.0.0:15006", "--upstream", "127.0.0.1:{{ int $in }}", "--admin-listen", "127.0.0.1:15022", "--probe-listen", "0.0.0.0:15023"{{ with .inboundHost }}, "--inbound-host", {{ . | quote }}{{ end }}]
  {{- else }}
  args: ["--listen", "127.0.0.1:15001", "--admin-listen", "127.0.0.1:15020", "--probe-listen", "0.0.0.0:15021"]
  {{- end }}
  env:
    - name: WHOUSES_SERVICE
      value: {{ .service | quote }}
    - name: WHOUSES_ENVIRONMENT
      value: {{ .environment | default "default" | quote }}
    {{- if $in }}
    - name: POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    - name: WHOUSES_INSTANCE
      value: "$(POD_NAME)/inbound"
    {{- else }}
    - name: WHOUSES_INSTANCE
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    {{- end }}
    - name: WHOUSES_COLLECTOR_URL
      value: {{ include "whouses.collectorUrl" $root | quote }}
    - name: WHOUSES_FLUSH_INTERVAL
      value: {{ $root.Values.sidecar.flushInterval | quote }}
    - name: WHOUSES_TOKEN
      valueFrom:
        secretKeyRef:
          name: {{ $root.Values.webhook.tokenSecretName }}
          key: ingest-token
          optional: true
    {{- if $root.Values.collector.tls.enabled }}
    - name: WHOUSES_COLLECTOR_CA
      value: /etc/whouses/collector-ca/ca.crt
    {{- end }}
  {{- if $root.Values.collector.tls.enabled }}
  volumeMounts:
    - name: whouses-collector-ca
      mountPath: /etc/whouses/collector-ca
      readOnly: true
  {{- end }}
  ports:
    - name: {{ if $in }}whouses-inprobe{{ else }}whouses-probe{{ end }}
      containerPort: {{ $probe }}
    {{- if $in }}
    - name: whouses-inbound
      containerPort: 15006
    {{- end }}
  startupProbe:
    httpGet: {path: /healthz, port: {{ $probe }}}
    periodSeconds: 1
    failureThreshold: 30
  readinessProbe:
    httpGet: {path: /readyz, port: {{ $probe }}}
  livenessProbe:
    httpGet: {path: /healthz, port: {{ $probe }}}
  resources:
    requests:
      cpu: {{ $root.Values.sidecar.cpuRequest }}
      memory: {{ $root.Values.sidecar.memoryRequest }}
    limits:
      memory: {{ $root.Values.sidecar.memoryLimit }}
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    {{- toYaml $root.Values.securityContext | nindent 4 }}
{{- end -}}


{{/* The inbound sidecar by hand (issue 14): "whouses.sidecar" with "upstreamPort"
required — the first step of a decommission, put whouses in front of what you retire:
  initContainers:
    {{- include "whouses.inboundSidecar" (dict "root" $ "service" "reference" "environment" "prod" "upstreamPort" 8080 "inboundHost" "tis-reference.internal") | nindent 4 }}
*/}}
{{- define "whouses.inboundSidecar" -}}
{{- if not .upstreamPort -}}
{{- fail "whouses.inboundSidecar needs upstreamPort: the port the app listens on (then point the Service's targetPort at 15006)" -}}
{{- end -}}
{{- include "whouses.sidecar" . -}}
{{- end -}}

{{/* The volumes the by-hand sidecar needs: nothing unless collector.tls.enabled (list
it after the pod's own volumes, or alone under `volumes:`). */}}
{{- define "whouses.sidecarVolumes" -}}
{{- $root := .root -}}
{{- if and $root.Subcharts (hasKey $root.Subcharts "whouses") -}}
{{- $root = index $root.Subcharts "whouses" -}}
{{- end -}}
{{- if $root.Values.collector.tls.enabled -}}
- name: whouses-collector-ca
  secret:
    secretName: {{ include "whouses.collectorTlsSecret" $root }}
    items:
      - key: ca.crt
        path: ca.crt
{{- end -}}
{{- end -}}
