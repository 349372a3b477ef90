{{/* The chart name, or nameOverride. */}}
{{- define "droplet-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Name of every object: fullnameOverride, else the release name when it contains the chart name, else both. */}}
{{- define "droplet-operator.fullname" -}}
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

{{/* Labels that select the operator's pods (never change them: a Deployment's selector is immutable). */}}
{{- define "droplet-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "droplet-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "droplet-operator.labels" -}}
{{ include "droplet-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: droplet-operator
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "droplet-operator.serviceAccountName" -}}
{{- default (include "droplet-operator.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{- define "droplet-operator.leaseName" -}}
{{- default (include "droplet-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/* The subject of every binding. */}}
{{- define "droplet-operator.subject" -}}
- kind: ServiceAccount
  name: {{ include "droplet-operator.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- end }}

{{/* Combinations the operator cannot run with, refused with the value to change. */}}
{{- define "droplet-operator.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicaCount > 1 needs leaderElection.enabled=true (otherwise every replica reconciles and they split DigitalOcean's rate budget)" }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.service.enabled) }}
{{- fail "metrics.serviceMonitor.enabled=true needs metrics.service.enabled=true (the ServiceMonitor scrapes that Service)" }}
{{- end }}
{{- end }}
