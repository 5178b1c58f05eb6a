{{/* Names and labels shared by every template. */}}

{{/* The chart name, or nameOverride. */}}
{{- define "aso.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The prefix of every namespaced object's name. */}}
{{- define "aso.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "aso.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The full name plus a suffix, as one DNS label: the full name is shortened so the suffix
     always fits in 63 characters and names of different objects stay different.
     Call with (dict "root" $ "suffix" "metrics"). */}}
{{- define "aso.suffixed" -}}
{{- $room := int (sub 62 (len .suffix)) -}}
{{- printf "%s-%s" (include "aso.fullname" .root | trunc $room | trimSuffix "-") .suffix -}}
{{- end -}}

{{/* A DNS label for a name that may be too long: kept when it fits in 63 characters, else
     shortened and made unique again with a hash of the whole name. */}}
{{- define "aso.label" -}}
{{- if le (len .) 63 -}}
{{- . -}}
{{- else -}}
{{- printf "%s-%s" (trunc 54 . | trimSuffix "-") (sha256sum . | trunc 8) -}}
{{- end -}}
{{- end -}}

{{/* Cluster-scoped objects carry the release namespace too, so releases in two namespaces
     never collide. Without a namespace (`helm template` or `helm lint` without --namespace)
     the full name alone, never a name starting with "-". */}}
{{- define "aso.clusterName" -}}
{{- if .Release.Namespace -}}
{{- include "aso.label" (printf "%s-%s" .Release.Namespace (include "aso.fullname" .)) -}}
{{- else -}}
{{- include "aso.fullname" . -}}
{{- end -}}
{{- end -}}

{{- define "aso.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "aso.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "aso.selectorLabels" -}}
app.kubernetes.io/name: {{ include "aso.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "aso.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "aso.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "aso.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The webhook Service's name; also the DNS name in the serving certificate. */}}
{{- define "aso.webhookServiceName" -}}
{{- include "aso.suffixed" (dict "root" . "suffix" "webhook") -}}
{{- end -}}

{{/* The Secret holding the webhook's serving certificate, for modes cert-manager and secret. */}}
{{- define "aso.webhookCertSecret" -}}
{{- if eq .Values.webhook.certificates.mode "secret" -}}
{{- required "webhook.certificates.secret.name is required with mode secret" .Values.webhook.certificates.secret.name -}}
{{- else -}}
{{- include "aso.suffixed" (dict "root" . "suffix" "webhook-tls") -}}
{{- end -}}
{{- end -}}

{{/*
Rules for the namespaces the operator watches: bound cluster-wide when it watches every
namespace, and through a Role in each watched namespace otherwise. Every rule is one the code
declares (src/operator/permissions.rs, `Scope::Watched`); tests/rbac.rs checks the two agree and
that each rule is needed.
*/}}
{{- define "aso.watchedRules" -}}
# Connections: the controller's watcher (list, watch); start-up checks list them.
- apiGroups: [connectors.openteam.io]
  resources: [amazonsellerconnections]
  verbs: [list, watch]
# Connections: the disconnect finalizer is added and removed with a JSON patch.
- apiGroups: [connectors.openteam.io]
  resources: [amazonsellerconnections]
  verbs: [patch]
# Connection status, written by server-side apply.
- apiGroups: [connectors.openteam.io]
  resources: [amazonsellerconnections/status]
  verbs: [patch]
# Runtime and credentials Secrets: label-selected watches and reads. RBAC cannot narrow by
# label, so these are every Secret of the watched namespaces; set watchNamespaces to limit them.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch]
# Runtime Secrets are created by server-side apply.
- apiGroups: [""]
  resources: [secrets]
  verbs: [create]
# Runtime Secrets (server-side apply) and re-sealed credentials (merge patch) are written.
- apiGroups: [""]
  resources: [secrets]
  verbs: [patch]
# Runtime Secrets are removed on suspend and on disconnect (the finalizer).
- apiGroups: [""]
  resources: [secrets]
  verbs: [delete]
# Events on connections and credentials Secrets.
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create]
# A repeated Event (same object version) is patched to count the repeat.
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [patch]
# Pods are watched (each trimmed to its Secret references on arrival) to find those that
# reference a runtime Secret outside the rules after they were admitted.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
# spec.onUnauthorizedMount: Evict evicts such a pod through the Eviction API.
- apiGroups: [""]
  resources: [pods/eviction]
  verbs: [create]
{{- if and .Values.webhook.enabled .Values.credentialEndpoint.enabled }}
# The credential endpoint reads the pod a caller's token is bound to (uid, gateway label).
- apiGroups: [""]
  resources: [pods]
  verbs: [get]
{{- end }}
{{- end -}}

{{/* A webhook clientConfig: dict with root (the chart context), service and path. */}}
{{- define "aso.webhookClientConfig" -}}
service:
  name: {{ .service }}
  namespace: {{ .root.Release.Namespace }}
  port: {{ .root.Values.webhook.service.port }}
  path: {{ .path }}
{{- if eq .root.Values.webhook.certificates.mode "secret" }}
caBundle: {{ required "webhook.certificates.secret.caBundle is required with mode secret" .root.Values.webhook.certificates.secret.caBundle }}
{{- end }}
{{- end }}
