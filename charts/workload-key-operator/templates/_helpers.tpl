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

{{/* The watched namespaces, comma-joined (WKO_WATCH_NAMESPACE), or "" for all. Duplicates and empty entries dropped. */}}
{{- define "wko.watchNamespaces" -}}
{{- $ns := list }}
{{- range (.Values.watchNamespaces | default list) }}
{{- if and . (not (has . $ns)) }}{{ $ns = append $ns . }}{{ end }}
{{- end }}
{{- join "," $ns }}
{{- end }}

{{/* Where the Secrets named by ClusterKeyProviders live (WKO_CLUSTER_RESOURCE_NAMESPACE). */}}
{{- define "wko.clusterResourceNamespace" -}}
{{- default .Release.Namespace .Values.clusterResourceNamespace }}
{{- end }}

{{- define "wko.validate" -}}
{{- if not (has .Values.logFormat (list "text" "json")) }}
{{- fail "logFormat must be text or json" }}
{{- end }}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicaCount > 1 needs leaderElection.enabled=true: replicas would otherwise reconcile the same resources concurrently" }}
{{- end }}
{{- end }}

{{/*
The operator's rules, exactly what the code calls (src/controller), no wildcards. Three sets:
- wko.namespacedRules: in every namespace it serves (a ClusterRole for all, else a Role in each);
- wko.clusterRules: what is cluster-scoped (always a ClusterRole);
- wko.clusterResourceRules: in the cluster-resource namespace, whose Secrets ClusterKeyProviders name.
*/}}
{{- define "wko.namespacedRules" -}}
# The resources and KeyProviders: watch them (list, watch), read them fresh before deciding (get), add and remove
# their finalizers (patch: a JSON patch on the resources, a merge patch on providers).
- apiGroups: ["workloadkeys.io"]
  resources: ["workloadapikeys", "secureworkloadcredentials", "keyproviders"]
  verbs: ["get", "list", "watch", "patch"]
# Conditions, key IDs, fingerprints; a provider's readiness and users (server-side apply).
- apiGroups: ["workloadkeys.io"]
  resources: ["workloadapikeys/status", "secureworkloadcredentials/status", "keyproviders/status"]
  verbs: ["patch"]
# The Secrets it writes carry a controller owner reference with blockOwnerDeletion, which the
# OwnerReferencesPermissionEnforcement admission plugin (e.g. OpenShift) allows only with this.
- apiGroups: ["workloadkeys.io"]
  resources: ["workloadapikeys/finalizers", "secureworkloadcredentials/finalizers"]
  verbs: ["update"]
# Secrets: watched by metadata (list, watch); read the ones KeyProviders name and imported key pairs (get); write
# and repair its own (server-side apply: patch, and create, which the API server also checks when an apply creates);
# delete the ones it owns when a resource renames its target; hold the ones a KeyProvider names with a finalizer.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Events on the resources and KeyProviders (events.k8s.io/v1; a repeated Event is patched as a series).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
# spec.secret.rolloutRestartTargets: restart them when the Secret's data changes (patch: a pod-template annotation,
# as `kubectl rollout restart`), read their rollout (get), and be woken as it progresses (list, watch by metadata).
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets", "daemonsets"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}

{{- define "wko.clusterRules" -}}
# ClusterKeyProviders: watch them, read them fresh, their finalizer (patch), their readiness and users (status).
- apiGroups: ["workloadkeys.io"]
  resources: ["clusterkeyproviders"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["workloadkeys.io"]
  resources: ["clusterkeyproviders/status"]
  verbs: ["patch"]
# Namespace labels (a ClusterKeyProvider's allowedNamespaces.selector, watched by metadata) and whether a
# resource's namespace is terminating.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get", "list", "watch"]
{{- end }}

{{- define "wko.clusterResourceRules" -}}
# The Secrets ClusterKeyProviders name: watched by metadata, read, held with a finalizer (patch). Never written.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "patch"]
# Before releasing a Secret's finalizer: whether a KeyProvider here names it too.
- apiGroups: ["workloadkeys.io"]
  resources: ["keyproviders"]
  verbs: ["list"]
{{- end }}

{{/* Events on cluster-scoped objects (ClusterKeyProviders) go to the `default` namespace, as kubectl looks for them. */}}
{{- define "wko.clusterEventRules" -}}
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
