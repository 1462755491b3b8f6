{{/* The chart name, overridable. */}}
{{- define "wko.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: names every object of the release. */}}
{{- define "wko.fullname" -}}
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

{{- define "wko.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "wko.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wko.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "wko.labels" -}}
helm.sh/chart: {{ include "wko.chart" . }}
{{ include "wko.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "wko.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "wko.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "wko.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "wko.leaseName" -}}
{{- default (include "wko.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/* The one watched namespace, or "" for all. The operator serves one namespace or all of them. */}}
{{- define "wko.watchNamespace" -}}
{{- $ns := .Values.watchNamespaces | default list }}
{{- if gt (len $ns) 1 }}
{{- fail "watchNamespaces takes at most one namespace (the operator watches one namespace or all): install one release per namespace, or leave it empty for all" }}
{{- end }}
{{- if $ns }}{{ first $ns }}{{ end }}
{{- end }}

{{- define "wko.validate" -}}
{{- if not (has .Values.logFormat (list "text" "json")) }}
{{- fail "logFormat must be text or json" }}
{{- end }}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicaCount > 1 needs leaderElection.enabled=true: replicas would otherwise reconcile the same resources concurrently" }}
{{- end }}
{{- end }}

{{/* What the controllers need in every namespace they serve. No wildcards. */}}
{{- define "wko.operatorRules" -}}
# The custom resources: watch them, add and remove the finalizer, write status.
- apiGroups: ["workloadkeys.io"]
  resources: ["workloadapikeys", "secureworkloadcredentials"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["workloadkeys.io"]
  resources: ["workloadapikeys/status", "secureworkloadcredentials/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["workloadkeys.io"]
  resources: ["workloadapikeys/finalizers", "secureworkloadcredentials/finalizers"]
  verbs: ["update"]
# Read the referenced credentials (admin key, login, CA); write, repair and remove the Secrets it owns.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
# Events on the resources (events.k8s.io/v1; core events for older tooling).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
# Whether the resource's namespace is terminating (cleanup then does not wait for Secrets).
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get"]
{{- end }}
