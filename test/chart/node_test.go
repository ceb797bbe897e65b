package chart

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/petfabric/petfabric/pkg/agent"
	"github.com/petfabric/petfabric/pkg/flex"
	"github.com/petfabric/petfabric/test/helmchart"
)

// TestNodeDaemonSet: runs on every node whatever its taints, as system-node-critical, with
// the install init container writing into the configured host plugin directory, and the agent
// knowing its node and namespace from the downward API; no container is privileged or keeps a
// capability.
func TestNodeDaemonSet(t *testing.T) {
	objs := render(t, "default", "node:\n  pluginDir: /var/lib/kubelet/volumeplugins\n")
	var ds appsv1.DaemonSet
	decode(t, objs, "DaemonSet", "petfabric-node", &ds)
	pod := ds.Spec.Template.Spec
	assert.Equal(t, "system-node-critical", pod.PriorityClassName)
	assert.Equal(t, []corev1.Toleration{{Operator: corev1.TolerationOpExists}}, pod.Tolerations, "tolerates every taint")
	assert.Equal(t, "petfabric-agent", pod.ServiceAccountName, "the identity the node-reports policy names")
	assert.True(t, pod.HostNetwork, "probes use the node's own network")

	hostPaths := map[string]string{}
	for _, v := range pod.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	assert.Equal(t, map[string]string{"plugins": "/var/lib/kubelet/volumeplugins", "host-config": "/etc/petfabric",
		"iscsi": "/etc/iscsi", "state": "/var/lib/petfabric/flex"}, hostPaths)

	require.Len(t, pod.InitContainers, 1)
	install := pod.InitContainers[0]
	assert.Equal(t, []string{"/usr/local/bin/flex", "install"}, install.Command)
	mountOf := func(c corev1.Container, vol string) string {
		for _, m := range c.VolumeMounts {
			if m.Name == vol {
				assert.Empty(t, m.SubPath)
				return m.MountPath
			}
		}
		return ""
	}
	assert.Contains(t, install.Args, "--plugin-dir="+mountOf(install, "plugins"))
	assert.Contains(t, install.Args, "--node-config-dest="+mountOf(install, "host-config")+"/flex.json",
		"the node config lands at /etc/petfabric/flex.json, where the driver reads it")
	assert.Contains(t, install.Args, "--node-config="+mountOf(install, "config")+"/flex.json")

	a := container(t, pod, "agent")
	assert.Equal(t, []string{"/usr/local/bin/flex", "agent"}, a.Command)
	env := map[string]string{}
	for _, e := range a.Env {
		require.NotNil(t, e.ValueFrom, e.Name)
		env[e.Name] = e.ValueFrom.FieldRef.FieldPath
	}
	assert.Equal(t, map[string]string{"NODE_NAME": "spec.nodeName", "POD_NAMESPACE": "metadata.namespace"}, env)
	assert.Contains(t, a.Args, "--node=$(NODE_NAME)")
	assert.Contains(t, a.Args, "--state-dir="+mountOf(a, "state"))
	assert.Contains(t, a.Args, "--initiator-file="+mountOf(a, "iscsi")+"/initiatorname.iscsi")
	assert.Contains(t, a.Args, "--backstores="+mountOf(a, "config")+"/backstores.json")

	for _, c := range append(pod.InitContainers, pod.Containers...) {
		sc := c.SecurityContext
		require.NotNil(t, sc, c.Name)
		assert.Nil(t, sc.Privileged, c.Name)
		assert.False(t, *sc.AllowPrivilegeEscalation, c.Name)
		assert.True(t, *sc.ReadOnlyRootFilesystem, c.Name)
		assert.Equal(t, []corev1.Capability{"ALL"}, sc.Capabilities.Drop, c.Name)
		assert.Empty(t, sc.Capabilities.Add, c.Name)
	}
	assert.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, pod.SecurityContext.SeccompProfile.Type)

	var role rbacv1.Role
	decode(t, objs, "Role", "petfabric-agent", &role)
	assert.Equal(t, []rbacv1.PolicyRule{{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "create", "update"}}}, role.Rules)

	// No backstores: no DaemonSet (the agent needs one), the agent's identity stays.
	objs = render(t, "", "")
	assert.Nil(t, helmchart.Find(objs, "DaemonSet", "petfabric-node"))
	assert.NotNil(t, helmchart.Find(objs, "ServiceAccount", "petfabric-agent"))
}

// TestNodeConfigLoads: the rendered node config and backstores file are accepted by the code
// that reads them on the node (pkg/flex.LoadConfig, pkg/agent.LoadBackstores), and the
// driver's state directory is the one the agent is given.
func TestNodeConfigLoads(t *testing.T) {
	objs := render(t, "default", "node:\n  stateDir: /srv/petfabric/state\n  config:\n    allowedBackstores: ['datera.example.com:7718']\n    multipath: 'off'\n")
	var cm corev1.ConfigMap
	decode(t, objs, "ConfigMap", "petfabric-node", &cm)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "flex.json")
	require.NoError(t, os.WriteFile(cfgPath, []byte(cm.Data["flex.json"]), 0o600))
	t.Setenv(flex.EnvConfig, cfgPath)
	t.Setenv(flex.EnvStateDir, "")
	cfg, err := flex.LoadConfig()
	require.NoError(t, err, "flex.json:\n%s", cm.Data["flex.json"])
	assert.Equal(t, []string{"datera.example.com:7718"}, cfg.AllowedBackstores)
	assert.Equal(t, "/srv/petfabric/state", cfg.StateDir)
	assert.Equal(t, "/etc/iscsi/initiatorname.iscsi", cfg.InitiatorNameFile)

	bsPath := filepath.Join(dir, "backstores.json")
	require.NoError(t, os.WriteFile(bsPath, []byte(cm.Data["backstores.json"]), 0o600))
	bs, err := agent.LoadBackstores(bsPath)
	require.NoError(t, err, "backstores.json:\n%s", cm.Data["backstores.json"])
	require.Len(t, bs, 1)

	var ds appsv1.DaemonSet
	decode(t, objs, "DaemonSet", "petfabric-node", &ds)
	for _, v := range ds.Spec.Template.Spec.Volumes {
		if v.Name == "state" {
			assert.Equal(t, "/srv/petfabric/state", v.HostPath.Path)
		}
	}
}
