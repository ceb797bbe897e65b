package chart

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	schedulerv1 "k8s.io/kube-scheduler/config/v1"
	"sigs.k8s.io/yaml"

	"github.com/petfabric/petfabric/internal/testenv"
	"github.com/petfabric/petfabric/internal/testpki"
	"github.com/petfabric/petfabric/pkg/extender"
	"github.com/petfabric/petfabric/test/helmchart"
)

// schedulerConfig decodes the rendered scheduler configuration strictly into the upstream
// kube-scheduler type: a field kube-scheduler does not know fails the test.
func schedulerConfig(t *testing.T, objs []*unstructured.Unstructured) schedulerv1.KubeSchedulerConfiguration {
	t.Helper()
	var cm corev1.ConfigMap
	decode(t, objs, "ConfigMap", "petfabric-scheduler", &cm)
	raw, ok := cm.Data["scheduler-config.yaml"]
	require.True(t, ok, "ConfigMap key scheduler-config.yaml")
	var cfg schedulerv1.KubeSchedulerConfiguration
	require.NoError(t, yaml.UnmarshalStrict([]byte(raw), &cfg), "decode the KubeSchedulerConfiguration:\n%s", raw)
	assert.Equal(t, "kubescheduler.config.k8s.io/v1", cfg.APIVersion)
	assert.Equal(t, "KubeSchedulerConfiguration", cfg.Kind)
	return cfg
}

// TestSchedulerConfiguration: the configuration calls the extender at its Service or on
// 127.0.0.1, with names-only node caching, the managed resource, the extender's verbs and a
// CA that verifies it; the secondary scheduler has its own profile and lease, and the webhook
// passes it the same resource and (secondary mode) scheduler name.
func TestSchedulerConfiguration(t *testing.T) {
	caPEM := func(ci string) string {
		raw, err := os.ReadFile(ciFile(ci))
		require.NoError(t, err)
		values := string(raw)
		_, pem, ok := strings.Cut(values, "caBundle: |\n")
		require.True(t, ok)
		var lines []string
		for _, l := range strings.Split(pem, "\n") {
			if !strings.HasPrefix(l, "    ") {
				break
			}
			lines = append(lines, strings.TrimPrefix(l, "    "))
		}
		return strings.Join(lines, "\n") + "\n"
	}
	for _, tc := range []struct {
		name, ci, values string
		url              string
		ignorable        bool
		weight           int64
		scheduler        string
		caFile, caData   string
		resource         string
	}{
		{name: "kubeadm default scheduler", ci: "default", url: "https://" + extenderName + "." + ns + ".svc:443", weight: 5,
			scheduler: "default-scheduler", caFile: "/etc/kubernetes/petfabric/extender-ca.crt", resource: "petfabric.io/datera"},
		{name: "host-network extender", ci: "hostnetwork-extender", url: "https://127.0.0.1:9443", ignorable: true, weight: 10,
			scheduler: "default-scheduler", caFile: "/etc/kubernetes/petfabric/extender-ca.crt", resource: "petfabric.io/datera"},
		{name: "secondary scheduler", ci: "secondary-scheduler", url: "https://" + extenderName + "." + ns + ".svc:443", weight: 5,
			scheduler: "petfabric-scheduler", caFile: "/etc/petfabric/extender-ca/ca.crt", resource: "petfabric.io/datera"},
		{name: "provided CA", ci: "provided-cabundle", url: "https://" + extenderName + "." + ns + ".svc:443", weight: 5,
			scheduler: "default-scheduler", caData: caPEM("provided-cabundle"), resource: "petfabric.io/datera"},
		{name: "no managed resource", ci: "default", values: "scheduler:\n  managedResource: ''\n", url: "https://" + extenderName + "." + ns + ".svc:443", weight: 5,
			scheduler: "default-scheduler", caFile: "/etc/kubernetes/petfabric/extender-ca.crt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := render(t, tc.ci, tc.values)
			cfg := schedulerConfig(t, objs)
			require.Len(t, cfg.Profiles, 1)
			assert.Equal(t, tc.scheduler, *cfg.Profiles[0].SchedulerName)
			require.Len(t, cfg.Extenders, 1)
			e := cfg.Extenders[0]
			assert.Equal(t, tc.url, e.URLPrefix)
			assert.Equal(t, strings.TrimPrefix(extender.FilterPath, "/"), e.FilterVerb)
			assert.Equal(t, strings.TrimPrefix(extender.PrioritizePath, "/"), e.PrioritizeVerb)
			assert.Empty(t, e.BindVerb, "kube-scheduler binds")
			assert.Empty(t, e.PreemptVerb)
			assert.True(t, e.NodeCacheCapable, "names only")
			assert.True(t, e.EnableHTTPS)
			assert.Equal(t, tc.ignorable, e.Ignorable)
			assert.Equal(t, tc.weight, e.Weight)
			require.NotNil(t, e.TLSConfig)
			assert.Equal(t, tc.caFile, e.TLSConfig.CAFile)
			assert.Equal(t, tc.caData, string(e.TLSConfig.CAData))
			assert.False(t, e.TLSConfig.Insecure)

			var dep appsv1.Deployment
			decode(t, objs, "Deployment", webhookName, &dep)
			args := container(t, dep.Spec.Template.Spec, "webhook").Args
			if tc.resource != "" {
				assert.Equal(t, []schedulerv1.ExtenderManagedResource{{Name: tc.resource, IgnoredByScheduler: true}}, e.ManagedResources)
				assert.Contains(t, args, "--managed-resource="+tc.resource, "the webhook adds the resource the configuration manages")
			} else {
				assert.Empty(t, e.ManagedResources)
				assert.NotContains(t, strings.Join(args, " "), "--managed-resource")
			}
			if tc.scheduler != "default-scheduler" {
				assert.Contains(t, args, "--scheduler-name="+tc.scheduler)
				assert.True(t, *cfg.LeaderElection.LeaderElect)
				assert.Equal(t, tc.scheduler, cfg.LeaderElection.ResourceName, "its own lease, not kube-scheduler's")
				assert.Equal(t, ns, cfg.LeaderElection.ResourceNamespace)
				assert.Empty(t, cfg.ClientConnection.Kubeconfig, "in-cluster")
			} else {
				assert.NotContains(t, strings.Join(args, " "), "--scheduler-name")
				assert.Equal(t, "/etc/kubernetes/scheduler.conf", cfg.ClientConnection.Kubeconfig)
			}
		})
	}
}

// TestSecondaryScheduler: the upstream kube-scheduler runs with the rendered configuration,
// under the scheduler roles bound to its own ServiceAccount, reading the extender's CA from
// the extender's Secret mounted as a directory.
func TestSecondaryScheduler(t *testing.T) {
	objs := render(t, "secondary-scheduler", "")
	var dep appsv1.Deployment
	decode(t, objs, "Deployment", "petfabric-scheduler", &dep)
	pod := dep.Spec.Template.Spec
	c := container(t, pod, "kube-scheduler")
	assert.Equal(t, "registry.k8s.io/kube-scheduler:v1.36.3", c.Image)
	assert.Contains(t, c.Args, "--config=/etc/petfabric/scheduler/scheduler-config.yaml")
	requireRestricted(t, pod, c)
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m.MountPath
		assert.Empty(t, m.SubPath)
	}
	assert.Equal(t, "/etc/petfabric/scheduler", mounts["config"])
	assert.Equal(t, "/etc/petfabric/extender-ca", mounts["extender-ca"])
	for _, v := range pod.Volumes {
		switch v.Name {
		case "config":
			assert.Equal(t, "petfabric-scheduler", v.ConfigMap.Name)
		case "extender-ca":
			assert.Equal(t, extenderCert, v.Secret.SecretName)
		}
	}
	roles := map[string]bool{}
	for _, o := range helmchart.OfKind(objs, "ClusterRoleBinding") {
		var b rbacv1.ClusterRoleBinding
		require.NoError(t, helmchart.Decode(o, &b))
		for _, s := range b.Subjects {
			if s.Name == "petfabric-scheduler" && s.Namespace == ns {
				roles[b.RoleRef.Name] = true
			}
		}
	}
	assert.Equal(t, map[string]bool{"system:kube-scheduler": true, "system:volume-scheduler": true}, roles)
	var role rbacv1.Role
	decode(t, objs, "Role", "petfabric-scheduler", &role)
	assert.Contains(t, role.Rules, rbacv1.PolicyRule{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, ResourceNames: []string{"petfabric-scheduler"}, Verbs: []string{"get", "update"}})

	// Without secondary mode, no scheduler Deployment and no scheduler name for the webhook.
	assert.Nil(t, helmchart.Find(render(t, "default", ""), "Deployment", "petfabric-scheduler"))
}

// TestExtender: the Deployment behind its Service, or the control-plane DaemonSet on the host
// network listening on 127.0.0.1 with a certificate for 127.0.0.1.
func TestExtender(t *testing.T) {
	objs := render(t, "default", "")
	var dep appsv1.Deployment
	decode(t, objs, "Deployment", extenderName, &dep)
	pod := dep.Spec.Template.Spec
	c := container(t, pod, "extender")
	assert.Equal(t, []string{"/usr/local/bin/extender"}, c.Command)
	assert.Contains(t, c.Args, "--namespace=$(POD_NAMESPACE)")
	requireRestricted(t, pod, c)
	requireTLSMount(t, pod, "extender", extenderCert)
	var svc corev1.Service
	decode(t, objs, "Service", extenderName, &svc)
	cert := helmchart.Find(objs, "Certificate", extenderCert)
	require.NotNil(t, cert)
	dns, _, _ := unstructured.NestedStringSlice(cert.Object, "spec", "dnsNames")
	assert.Equal(t, []string{svc.Name, svc.Name + "." + ns, svc.Name + "." + ns + ".svc", svc.Name + "." + ns + ".svc.cluster.local"}, dns)

	objs = render(t, "hostnetwork-extender", "")
	assert.Nil(t, helmchart.Find(objs, "Deployment", extenderName))
	assert.Nil(t, helmchart.Find(objs, "Service", extenderName))
	var ds appsv1.DaemonSet
	decode(t, objs, "DaemonSet", extenderName, &ds)
	pod = ds.Spec.Template.Spec
	assert.True(t, pod.HostNetwork)
	assert.Equal(t, "", pod.NodeSelector["node-role.kubernetes.io/control-plane"])
	assert.Contains(t, pod.NodeSelector, "node-role.kubernetes.io/control-plane")
	assert.Contains(t, pod.Tolerations, corev1.Toleration{Key: "node-role.kubernetes.io/control-plane", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule})
	c = container(t, pod, "extender")
	assert.Contains(t, c.Args, "--listen=127.0.0.1:9443", "only the scheduler of the same node calls it")
	requireRestricted(t, pod, c)
	requireTLSMount(t, pod, "extender", extenderCert)
	cert = helmchart.Find(objs, "Certificate", extenderCert)
	require.NotNil(t, cert)
	ips, _, _ := unstructured.NestedStringSlice(cert.Object, "spec", "ipAddresses")
	assert.Equal(t, []string{"127.0.0.1"}, ips)

	var role rbacv1.Role
	decode(t, objs, "Role", extenderName, &role)
	// The recovery trigger (pkg/extender/requeue.go): created once, then patched by name.
	assert.Contains(t, role.Rules, rbacv1.PolicyRule{APIGroups: []string{"storage.k8s.io"}, Resources: []string{"csistoragecapacities"}, Verbs: []string{"create"}})
	assert.Contains(t, role.Rules, rbacv1.PolicyRule{APIGroups: []string{"storage.k8s.io"}, Resources: []string{"csistoragecapacities"},
		ResourceNames: []string{"petfabric-requeue-trigger"}, Verbs: []string{"patch"}})
	assert.Contains(t, c.Args, "--requeue-trigger-name=petfabric-requeue-trigger")

	// Trigger off: no CSIStorageCapacity rule at all.
	objs = render(t, "default", "scheduler:\n  requeueTrigger: {enabled: false, name: x}\n")
	decode(t, objs, "Role", extenderName, &role)
	for _, r := range role.Rules {
		assert.NotContains(t, r.Resources, "csistoragecapacities")
	}
}

// kubeScheduler returns the pinned kube-scheduler, or fails (make test) / skips without it.
func kubeScheduler(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("PETFABRIC_K8S_BIN")
	if dir == "" {
		home, err := os.UserHomeDir()
		require.NoError(t, err)
		cache := os.Getenv("PETFABRIC_CACHE")
		if cache == "" {
			cache = filepath.Join(home, ".cache", "petfabric")
		}
		dir = filepath.Join(cache, "bin", "k8s-"+helmchart.KubeVersion(t))
	}
	bin := filepath.Join(dir, "kube-scheduler")
	if _, err := os.Stat(bin); err != nil {
		testenv.Missing(t, "pinned kube-scheduler ("+bin+")")
	}
	return bin
}

// TestKubeSchedulerAcceptsConfiguration: the pinned kube-scheduler loads each rendered
// configuration, validates it and builds its extender (reading the CA), then writes the
// configuration it would run with (--write-config-to) and exits. The files the configuration
// names on a control-plane node (kubeconfig, CA) are stand-ins in a temp directory.
func TestKubeSchedulerAcceptsConfiguration(t *testing.T) {
	bin := kubeScheduler(t)
	ca, err := testpki.NewCA("petfabric-scheduler-test-ca")
	require.NoError(t, err)
	for _, ci := range []string{"default", "hostnetwork-extender", "secondary-scheduler", "provided-cabundle"} {
		t.Run(ci, func(t *testing.T) {
			dir := t.TempDir()
			caFile := filepath.Join(dir, "ca.crt")
			require.NoError(t, os.WriteFile(caFile, ca.CertPEM, 0o600))
			kubeconfig := filepath.Join(dir, "kubeconfig")
			require.NoError(t, os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: unused}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600))
			cfg := schedulerConfig(t, render(t, ci, ""))
			cfg.ClientConnection.Kubeconfig = kubeconfig
			if tls := cfg.Extenders[0].TLSConfig; tls.CAFile != "" {
				tls.CAFile = caFile
			}
			b, err := yaml.Marshal(cfg)
			require.NoError(t, err)
			in, out := filepath.Join(dir, "config.yaml"), filepath.Join(dir, "written.yaml")
			require.NoError(t, os.WriteFile(in, b, 0o600))
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			res, err := exec.CommandContext(ctx, bin, "--config="+in, "--write-config-to="+out).CombinedOutput()
			require.NoError(t, err, "kube-scheduler refused the configuration:\n%s", res)
			written, err := os.ReadFile(out)
			require.NoError(t, err)
			var got schedulerv1.KubeSchedulerConfiguration
			require.NoError(t, yaml.Unmarshal(written, &got))
			require.Len(t, got.Extenders, 1)
			assert.Equal(t, cfg.Extenders[0].URLPrefix, got.Extenders[0].URLPrefix)
			assert.Equal(t, cfg.Extenders[0].ManagedResources, got.Extenders[0].ManagedResources)
		})
	}
}
