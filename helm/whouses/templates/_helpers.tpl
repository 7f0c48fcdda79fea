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
{{- define "whouses.collectorUrl" -}}http://{{ include "whouses.collector" . }}.{{ .Release.Namespace }}.svc:{{ .Values.service.port }}{{- end -}}

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
{{- fail "collector.replicas > 1 needs externalDatabase.enabled: SQLite has a single writer" -}}
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
and set HTTP_PROXY/HTTPS_PROXY=http://127.0.0.1:15001 on the app containers. From a
parent chart, the image, collector address and settings come from the whouses subchart.
*/}}
{{- define "whouses.sidecar" -}}
{{- $root := .root -}}
{{- if and $root.Subcharts (hasKey $root.Subcharts "whouses") -}}
{{- $root = index $root.Subcharts "whouses" -}}
{{- end -}}
- name: whouses-sidecar
  image: {{ include "whouses.image" $root }}
  imagePullPolicy: {{ $root.Values.image.pullPolicy }}
  command: ["/usr/local/bin/whouses-sidecar"]
  restartPolicy: Always
  args: ["--listen", "127.0.0.1:15001", "--admin-listen", "0.0.0.0:15020"]
  env:
    - name: WHOUSES_SERVICE
      value: {{ .service | quote }}
    - name: WHOUSES_ENVIRONMENT
      value: {{ .environment | default "default" | quote }}
    - name: WHOUSES_INSTANCE
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
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
  ports:
    - name: whouses-admin
      containerPort: 15020
  startupProbe:
    httpGet: {path: /healthz, port: 15020}
    periodSeconds: 1
    failureThreshold: 30
  readinessProbe:
    httpGet: {path: /readyz, port: 15020}
  livenessProbe:
    httpGet: {path: /healthz, port: 15020}
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
