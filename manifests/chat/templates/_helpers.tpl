{{/* Names, labels and the settings several templates share. */}}

{{- define "chat.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's base name: "chat" for a release named chat. */}}
{{- define "chat.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "chat.postgresqlName" -}}
{{- printf "%s-postgresql" (include "chat.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "chat.redisName" -}}
{{- printf "%s-redis" (include "chat.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "chat.scalerName" -}}
{{- printf "%s-scaler" (include "chat.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "chat.dashboardName" -}}
{{- printf "%s-dashboard" (include "chat.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "chat.configName" -}}
{{- printf "%s-config" (include "chat.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "chat.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "chat.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: chat
{{- end }}

{{/* Selector labels of one component; call with (list $ "component"). */}}
{{- define "chat.selectorLabels" -}}
{{- $top := index . 0 -}}
app.kubernetes.io/name: {{ include "chat.name" $top }}
app.kubernetes.io/instance: {{ $top.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "chat.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "chat.scrapeAnnotations" -}}
{{- $top := index . 0 -}}
{{- if $top.Values.metrics.scrapeAnnotations -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ index . 1 | quote }}
prometheus.io/path: {{ $top.Values.metrics.path | quote }}
{{- end }}
{{- end }}

{{/* The Secret and key that hold the in-cluster PostgreSQL password. */}}
{{- define "chat.postgresqlSecretName" -}}
{{- default (include "chat.postgresqlName" .) .Values.postgresql.auth.existingSecret }}
{{- end }}

{{/*
CHAT_DATABASE, and PGPASSWORD beside a URL that has no password: libpq reads
it, so the password never appears in the URL, the ConfigMap or an argument.
*/}}
{{- define "chat.databaseEnv" -}}
{{- if .Values.postgresql.enabled -}}
- name: CHAT_DATABASE
  valueFrom:
    configMapKeyRef:
      name: {{ include "chat.configName" . }}
      key: CHAT_DATABASE
- name: PGPASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "chat.postgresqlSecretName" . }}
      key: {{ .Values.postgresql.auth.secretKey }}
{{- else -}}
- name: CHAT_DATABASE
  valueFrom:
    secretKeyRef:
      name: {{ required "externalDatabase.existingSecret is needed when postgresql.enabled is false" .Values.externalDatabase.existingSecret }}
      key: {{ .Values.externalDatabase.urlKey }}
{{- end }}
{{- end }}

{{- define "chat.redisEnv" -}}
{{- if and (not .Values.redis.enabled) .Values.externalRedis.existingSecret -}}
- name: CHAT_REDIS
  valueFrom:
    secretKeyRef:
      name: {{ .Values.externalRedis.existingSecret }}
      key: {{ .Values.externalRedis.urlKey }}
{{- else -}}
- name: CHAT_REDIS
  valueFrom:
    configMapKeyRef:
      name: {{ include "chat.configName" . }}
      key: CHAT_REDIS
{{- end }}
{{- end }}

{{- define "chat.redisUrl" -}}
{{- if .Values.redis.enabled }}
{{- printf "redis://%s:6379/0" (include "chat.redisName" .) }}
{{- else }}
{{- required "externalRedis.url or externalRedis.existingSecret is needed when redis.enabled is false" .Values.externalRedis.url }}
{{- end }}
{{- end }}
