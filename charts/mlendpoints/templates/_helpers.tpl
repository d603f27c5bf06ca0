{{- define "mlendpoints.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mlendpoints.fullname" -}}
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

{{/* The operator's Deployment, Service (the webhook's), ServiceAccount and RBAC objects. */}}
{{- define "mlendpoints.operator" -}}
{{- printf "%s-operator" (include "mlendpoints.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* authMode token: the ClusterRole the operator binds each such endpoint's router ServiceAccount to. */}}
{{- define "mlendpoints.routerAuthRole" -}}
{{- printf "%s-router-auth-delegator" (include "mlendpoints.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mlendpoints.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mlendpoints.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "mlendpoints.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "mlendpoints.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mlendpoints
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* metadata.labels and metadata.annotations of every object. */}}
{{- define "mlendpoints.metadata" -}}
labels:
  {{- include "mlendpoints.labels" . | nindent 2 }}
{{- with .Values.commonAnnotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "mlendpoints.image" -}}
{{- if .digest }}
{{- printf "%s@%s" .repository .digest }}
{{- else }}
{{- printf "%s:%s" .repository (.tag | default .appVersion) }}
{{- end }}
{{- end }}

{{- define "mlendpoints.webhookSecret" -}}
{{- if .Values.webhook.existingSecret }}
{{- .Values.webhook.existingSecret }}
{{- else if .Values.webhook.certManager.enabled }}
{{- printf "%s-webhook-cert" (include "mlendpoints.operator" .) }}
{{- end }}
{{- end }}

{{/*
RBAC, derived from one place. What the operator does to namespaced objects, in the namespaces
it watches: a ClusterRole's rules when it watches the whole cluster, each watched namespace's
Role's rules otherwise. Its own resources, the children it renders (the router's Role among
them: RBAC lets the operator grant only what it holds, hence endpointslices), events.
*/}}
{{- define "mlendpoints.rules.namespaced" -}}
- apiGroups: [mlendpoints.io]
  resources: [onlineendpoints, onlinedeployments, batchendpoints, batchdeployments, batchjobs]
  verbs: [get, list, watch, patch]
- apiGroups: [mlendpoints.io]
  resources: [onlineendpoints/status, onlinedeployments/status, batchendpoints/status, batchdeployments/status, batchjobs/status]
  verbs: [get, patch]
# Owner references with blockOwnerDeletion need this on the owner.
- apiGroups: [mlendpoints.io]
  resources: [onlineendpoints/finalizers, onlinedeployments/finalizers, batchjobs/finalizers]
  verbs: [update]
- apiGroups: [""]
  resources: [configmaps, secrets, services, serviceaccounts]
  verbs: [get, list, watch, create, patch]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch]
# scaleSettings.type concurrency: the operator sets the replicas of the model servers it scales.
- apiGroups: [apps]
  resources: [deployments/scale]
  verbs: [patch]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, list, watch, create, patch, delete]
# One NetworkPolicy per OnlineDeployment (serving.networkPolicy.enabled), deleted when turned off.
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [get, list, watch, create, patch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
{{- if .Values.watchNamespaces }}
# kopf's peering, in each watched namespace.
- apiGroups: [kopf.dev]
  resources: [kopfpeerings]
  verbs: [get, list, watch, patch]
{{- end }}
{{- end }}

{{/*
Cluster-scoped objects, in either mode: kopf reads CRDs to find the resources it serves, and
registers the webhook. A configuration's create cannot be narrowed by name (the name is not
known to RBAC before the object exists), its get and patch can: the operator may not touch any
other admission webhook configuration.
*/}}
{{- define "mlendpoints.rules.cluster" -}}
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [get, list, watch]
{{- if not .Values.watchNamespaces }}
# A cluster-wide kopf follows namespaces coming and going, and peers in one ClusterKopfPeering.
- apiGroups: [""]
  resources: [namespaces]
  verbs: [get, list, watch]
# kopf lists and watches every peering object; it writes only its own.
- apiGroups: [kopf.dev]
  resources: [clusterkopfpeerings]
  verbs: [list, watch]
- apiGroups: [kopf.dev]
  resources: [clusterkopfpeerings]
  resourceNames: [{{ include "mlendpoints.fullname" . }}]
  verbs: [get, patch]
{{- end }}
# authMode token: one ClusterRoleBinding per such endpoint (cluster-scoped objects, so in either
# mode), binding the endpoint's router ServiceAccount to the router-auth ClusterRole, and RBAC lets
# the operator bind that ClusterRole only (bind by name: no other role can be handed out this way).
- apiGroups: [rbac.authorization.k8s.io]
  resources: [clusterrolebindings]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [clusterroles]
  resourceNames: [{{ include "mlendpoints.routerAuthRole" . }}]
  verbs: [bind]
{{- if .Values.webhook.enabled }}
# kopf registers the webhooks: the validating configuration and the mutating one (model inputs of
# labelled pods). Pods themselves are never written: a mutating webhook only answers with a patch.
- apiGroups: [admissionregistration.k8s.io]
  resources: [validatingwebhookconfigurations, mutatingwebhookconfigurations]
  verbs: [create]
- apiGroups: [admissionregistration.k8s.io]
  resources: [validatingwebhookconfigurations, mutatingwebhookconfigurations]
  resourceNames: [mlendpoints.io]
  verbs: [get, patch]
{{- end }}
{{- end }}
