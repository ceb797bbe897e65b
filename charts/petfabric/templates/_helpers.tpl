{{/*
Name of the release's objects: the release name, with the chart name appended unless the
release name already contains it.
*/}}
{{- define "petfabric.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "petfabric.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The FlexVolume driver name kubelet resolves to petfabric's driver (datera~iscsi/iscsi). */}}
{{- define "petfabric.flexDriver" -}}datera/iscsi{{- end -}}

{{/* Prefix of the node report Leases: petfabric-node-<node> (pkg/placement.LeaseName). */}}
{{- define "petfabric.reportLeasePrefix" -}}petfabric-node-{{- end -}}

{{/* The user name of a ServiceAccount of the release namespace, as the apiserver authenticates it. */}}
{{- define "petfabric.saUser" -}}
{{- printf "system:serviceaccount:%s:%s" .namespace .name -}}
{{- end -}}

{{- define "petfabric.webhookUser" -}}
{{- include "petfabric.saUser" (dict "namespace" .Release.Namespace "name" (required "serviceAccounts.webhook.name is required" .Values.serviceAccounts.webhook.name)) -}}
{{- end -}}

{{- define "petfabric.agentUser" -}}
{{- include "petfabric.saUser" (dict "namespace" .Release.Namespace "name" (required "serviceAccounts.agent.name is required" .Values.serviceAccounts.agent.name)) -}}
{{- end -}}

{{/*
A value as a CEL literal. JSON string and list syntax is valid CEL (double-quoted strings with
JSON's escapes), so a user or group name cannot break out of its literal.
*/}}
{{- define "petfabric.cel" -}}
{{- toJson . -}}
{{- end -}}

{{/*
The binding that enforces the release's policy .policy with Deny (dict "root" $ "policy" name).
*/}}
{{- define "petfabric.denyBinding" -}}
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: {{ .policy }}
  labels:
    {{- include "petfabric.labels" .root | nindent 4 }}
spec:
  policyName: {{ .policy }}
  validationActions: [Deny]
{{- end -}}
