{{/* The text of NOTES.txt, a template of its own so that tests can render it (helm template does not render NOTES.txt). */}}
{{- define "petfabric.notes" -}}
{{- $fullname := include "petfabric.fullname" . -}}
{{- $ns := .Release.Namespace -}}
petfabric {{ .Chart.AppVersion }} is installed in namespace {{ $ns }}.

1. TLS
{{- if eq (include "petfabric.tls.mode" .) "provided" }}
   The webhook configuration carries your tls.caBundle; the serving Secrets
   {{ .Values.tls.webhookSecretName | default "(url mode: yours)" }} and {{ .Values.tls.extenderSecretName }} must exist in {{ $ns }}.
{{- else }}
   cert-manager issues the serving certificates (it must be installed; it is no dependency of
   this chart). Check that they are Ready and that the CA was injected:
     kubectl -n {{ $ns }} get certificates
     kubectl get mutatingwebhookconfiguration {{ $fullname }} -o jsonpath='{.webhooks[0].clientConfig.caBundle}' | head -c 40
{{- end }}

2. The webhook
{{- if .Values.webhook.url }}
   The apiserver calls your out-of-cluster webhook at {{ .Values.webhook.url }}.
{{- else }}
     kubectl -n {{ $ns }} rollout status deployment/{{ include "petfabric.webhook.name" . }}
{{- end }}
   failurePolicy is {{ .Values.webhook.failurePolicy }}: StatefulSets with claim templates and Datera claims
   {{- if eq .Values.webhook.failurePolicy "Fail" }} are refused while the webhook is unreachable{{ else }} are admitted unpinned while the webhook is unreachable{{ end }}.

3. The scheduler
{{- if .Values.scheduler.secondary.enabled }}
   The secondary scheduler {{ .Values.scheduler.secondary.name }} runs with the extender configuration; the
   webhook sets schedulerName: {{ .Values.scheduler.secondary.name }} on the pets of the StatefulSets it pins.
     kubectl -n {{ $ns }} rollout status deployment/{{ .Values.scheduler.secondary.name }}
{{- else }}
   Wire the scheduler configuration into your control plane (README: "Scheduler wiring"):
{{- if ne .Values.scheduler.mode "DaemonSet" }}
   (It calls the extender's Service by its cluster DNS name; a kubeadm kube-scheduler on the
   host network usually cannot resolve it: use scheduler.mode=DaemonSet there.)
{{- end }}
     kubectl -n {{ $ns }} get configmap {{ $fullname }}-scheduler -o jsonpath='{.data.scheduler-config\.yaml}'
{{- if not .Values.tls.caBundle }}
   and copy the extender's CA to {{ .Values.scheduler.caFile }} on every control-plane node:
     kubectl -n {{ $ns }} get secret {{ include "petfabric.extender.tlsSecret" . }} -o jsonpath='{.data.ca\.crt}' | base64 -d
{{- end }}
{{- end }}
{{- if .Values.scheduler.managedResource }}
   Fail closed: every pet requests the extended resource {{ .Values.scheduler.managedResource }}, which no node
   advertises. Until the scheduler configuration lists it under managedResources (with
   ignoredByScheduler: true), pets stay Pending with FailedScheduling events saying
   "Insufficient {{ .Values.scheduler.managedResource }}"; they are never placed without the extender.
{{- end }}

4. The nodes
{{- if .Values.node.backstores }}
     kubectl -n {{ $ns }} rollout status daemonset/{{ $fullname }}-node
   The driver is installed in {{ .Values.node.pluginDir }} (kubelet's --volume-plugin-dir) and its node
   config at {{ .Values.node.configDir }}/flex.json. Node reports: kubectl -n {{ $ns }} get leases -l app.kubernetes.io/managed-by=petfabric
{{- else }}
   No node DaemonSet: set node.backstores (and node.config.allowedBackstores) to install the
   driver and the node agent.
{{- end }}

5. A test StatefulSet
{{- if .Values.storageClasses }}
   cat <<'YAML' | kubectl apply -f -
   apiVersion: apps/v1
   kind: StatefulSet
   metadata: {name: petfabric-smoke, namespace: default}
   spec:
     serviceName: petfabric-smoke
     replicas: 1
     selector: {matchLabels: {app: petfabric-smoke}}
     template:
       metadata: {labels: {app: petfabric-smoke}}
       spec:
         containers:
           - {name: app, image: busybox, command: [sleep, infinity], volumeMounts: [{name: data, mountPath: /data}]}
     volumeClaimTemplates:
       - metadata: {name: data}
         spec: {accessModes: [ReadWriteOnce], storageClassName: {{ (index .Values.storageClasses 0).name }}, resources: {requests: {storage: 1Gi}}}
   YAML
   kubectl get pv datera-default.data-petfabric-smoke-0    # made by the webhook at admission
{{- else }}
   No StorageClass was rendered: set storageClasses (README), then create a StatefulSet whose
   claim template names one.
{{- end }}

Uninstalling leaves the TLS Secrets cert-manager wrote ({{ $fullname }}-ca, {{ include "petfabric.webhook.name" . }}-tls,
{{ include "petfabric.extender.name" . }}-tls) unless cert-manager runs with --enable-certificate-owner-ref, and
every PersistentVolume with reclaim policy Retain together with its Datera volume.
{{- end -}}
