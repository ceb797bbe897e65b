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

{{/* Standard labels of one component (dict "root" $ "component" name). */}}
{{- define "petfabric.componentLabels" -}}
{{ include "petfabric.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Selector labels of one component (dict "root" $ "component" name). */}}
{{- define "petfabric.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The image of the three programs. */}}
{{- define "petfabric.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "petfabric.webhook.name" -}}{{ include "petfabric.fullname" . }}-webhook{{- end -}}

{{/*
How TLS is provided: "provided" (tls.caBundle and existing Secrets, no cert-manager),
"issuer" (an existing cert-manager issuer signs the serving certificates) or "selfsigned"
(the chart renders a self-signed CA chain).
*/}}
{{- define "petfabric.tls.mode" -}}
{{- if and .Values.tls.caBundle .Values.tls.issuerRef -}}
{{- fail "tls.caBundle and tls.issuerRef exclude each other: caBundle means no cert-manager at all, issuerRef an existing cert-manager issuer" -}}
{{- else if .Values.tls.caBundle -}}provided
{{- else if .Values.tls.issuerRef -}}issuer
{{- else -}}selfsigned
{{- end -}}
{{- end -}}

{{/* The Secret holding the webhook's serving certificate. */}}
{{- define "petfabric.webhook.tlsSecret" -}}
{{- if eq (include "petfabric.tls.mode" .) "provided" -}}
{{- required "tls.webhookSecretName is required with tls.caBundle (an existing kubernetes.io/tls Secret in the release namespace)" .Values.tls.webhookSecretName -}}
{{- else -}}
{{- include "petfabric.webhook.name" . }}-tls
{{- end -}}
{{- end -}}

{{/* The Secret with the Datera credentials the classes name. */}}
{{- define "petfabric.dateraSecret" -}}
{{- default (printf "%s-datera" (include "petfabric.fullname" .)) .Values.datera.existingSecret -}}
{{- end -}}

{{/* The restricted securityContext of a container that needs no privilege. */}}
{{- define "petfabric.restrictedContainer" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The pod securityContext of a pod that needs no privilege: the image's non-root user. */}}
{{- define "petfabric.restrictedPod" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The namespaces the webhook never sees: kube-system, the release's and excludeNamespaces. */}}
{{- define "petfabric.webhook.excludedNamespaces" -}}
{{- toJson (uniq (concat (list "kube-system" .Release.Namespace) .Values.webhook.excludeNamespaces)) -}}
{{- end -}}

{{- define "petfabric.extender.name" -}}{{ include "petfabric.fullname" . }}-extender{{- end -}}

{{/* The Secret holding the extender's serving certificate. */}}
{{- define "petfabric.extender.tlsSecret" -}}
{{- if eq (include "petfabric.tls.mode" .) "provided" -}}
{{- required "tls.extenderSecretName is required with tls.caBundle (an existing kubernetes.io/tls Secret in the release namespace)" .Values.tls.extenderSecretName -}}
{{- else -}}
{{- include "petfabric.extender.name" . }}-tls
{{- end -}}
{{- end -}}

{{/* The URL prefix kube-scheduler calls the extender at. */}}
{{- define "petfabric.extender.url" -}}
{{- if eq .Values.scheduler.mode "DaemonSet" -}}
https://127.0.0.1:{{ .Values.scheduler.hostPort }}
{{- else -}}
https://{{ include "petfabric.extender.name" . }}.{{ .Release.Namespace }}.svc:443
{{- end -}}
{{- end -}}

{{/*
The KubeSchedulerConfiguration calling the extender (dict "root" $ "secondary" bool). The
secondary scheduler runs in-cluster with its own profile and lease and reads the CA from the
mounted Secret; the default scheduler of a kubeadm control plane reads scheduler.caFile.
*/}}
{{- define "petfabric.schedulerConfig" -}}
{{- $v := .root.Values.scheduler -}}
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
{{- if .secondary }}
leaderElection:
  leaderElect: true
  resourceLock: leases
  resourceName: {{ $v.secondary.name }}
  resourceNamespace: {{ .root.Release.Namespace }}
profiles:
  - schedulerName: {{ $v.secondary.name }}
{{- else }}
clientConnection:
  kubeconfig: {{ $v.kubeconfig }}
profiles:
  - schedulerName: default-scheduler
{{- end }}
extenders:
  - urlPrefix: {{ include "petfabric.extender.url" .root }}
    filterVerb: filter
    prioritizeVerb: prioritize
    weight: {{ $v.weight }}
    # The extender keeps its own informer cache: the scheduler sends node names only.
    nodeCacheCapable: true
    enableHTTPS: true
    httpTimeout: {{ $v.httpTimeout }}
    ignorable: {{ $v.ignorable }}
    tlsConfig:
      {{- if .root.Values.tls.caBundle }}
      caData: {{ .root.Values.tls.caBundle | b64enc }}
      {{- else if .secondary }}
      caFile: /etc/petfabric/extender-ca/ca.crt
      {{- else }}
      caFile: {{ $v.caFile }}
      {{- end }}
    {{- with $v.managedResource }}
    managedResources:
      - name: {{ . }}
        ignoredByScheduler: true
    {{- end }}
{{- end -}}

{{/* The peers allowed to the health and metrics ports. */}}
{{- define "petfabric.np.metricsFrom" -}}
- namespaceSelector:
    {{- toYaml .Values.networkPolicy.metricsNamespaceSelector | nindent 4 }}
{{- range .Values.networkPolicy.nodeCIDRs }}
- ipBlock:
    cidr: {{ . }}
{{- end }}
{{- end }}
