{{/* The chart name, overridable with nameOverride. */}}
{{- define "torchyard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: the release name alone when it already contains the chart name. */}}
{{- define "torchyard.fullname" -}}
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

{{/* Labels on every object of the release. */}}
{{- define "torchyard.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "torchyard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The labels that select the operator's pods; never change them on upgrade. */}}
{{- define "torchyard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "torchyard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The operator's ServiceAccount name. */}}
{{- define "torchyard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "torchyard.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* "repository:tag", the tag defaulting to the chart's appVersion. */}}
{{- define "torchyard.image" -}}
{{- printf "%s:%s" .repository (default .appVersion .tag) }}
{{- end }}

{{/* Replicas above 1 run with kopf peering; one replica runs standalone. */}}
{{- define "torchyard.peering" -}}
{{- if gt (int .Values.replicaCount) 1 }}true{{ end }}
{{- end }}

{{/* The name of the (Cluster)KopfPeering object the replicas share. */}}
{{- define "torchyard.peeringName" -}}
{{- default (include "torchyard.fullname" .) .Values.peering.name }}
{{- end }}

{{/* The Secret holding the progress-token key. */}}
{{- define "torchyard.progressSecretName" -}}
{{- default (printf "%s-progress" (include "torchyard.fullname" .)) .Values.progress.existingSecret }}
{{- end }}

{{/* The operator's address as training pods reach it (its Service). */}}
{{- define "torchyard.progressUrlBase" -}}
{{- printf "http://%s.%s.svc:%d" (include "torchyard.fullname" .) .Release.Namespace (int .Values.service.port) }}
{{- end }}
