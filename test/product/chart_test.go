package product

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"

	"github.com/petfabric/petfabric/internal/testenv"
	"github.com/petfabric/petfabric/test/cluster"
)

func TestHostArgs(t *testing.T) {
	ctr := corev1.Container{Args: []string{
		"--listen=:8443", "--tls-cert-file=/etc/petfabric/tls/tls.crt", "--namespace=$(POD_NAMESPACE)",
		"--identity=$(POD_NAME)", "--interval=2s", "--state-dir=/host/state", "--state-dirx=/host/statex",
	}}
	for _, tc := range []struct {
		name     string
		env      map[string]string
		mounts   map[string]string
		override map[string]string
		want     []string
	}{
		{name: "nothing to change", want: ctr.Args},
		{name: "variables, mount paths and overrides",
			env:      map[string]string{"POD_NAMESPACE": "ns", "POD_NAME": "p-0"},
			mounts:   map[string]string{"/etc/petfabric/tls": "/tmp/x/tls", "/host/state": "/tmp/x/state"},
			override: map[string]string{"--listen": "127.0.0.1:1234", "--kubeconfig": "/tmp/x/kc"},
			want: []string{"--listen=127.0.0.1:1234", "--tls-cert-file=/tmp/x/tls/tls.crt", "--namespace=ns", "--identity=p-0",
				"--interval=2s", "--state-dir=/tmp/x/state", "--state-dirx=/host/statex", "--kubeconfig=/tmp/x/kc"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, HostArgs(ctr, tc.env, tc.mounts, tc.override))
		})
	}
}

func TestACLSection(t *testing.T) {
	show := "Target 3: iqn.x:a\n    System information:\n        Driver: iscsi\n    ACL information:\n        iqn.node-0\n        iqn.node-1\n"
	assert.Equal(t, "Target 3: iqn.x:a\n    ACL information:\n        iqn.node-0\n        iqn.node-1\n", aclSection(show))
}

func TestDriverReply(t *testing.T) {
	log := filepath.Join(t.TempDir(), "flex.log")
	require.NoError(t, os.WriteFile(log, []byte(`{"msg":"call","verb":"mount","pid":7,"args":["/a","{}"]}
{"msg":"call","verb":"mount","pid":8,"args":["/b","{}"]}
{"msg":"reply","verb":"mount","pid":8,"status":"Failure"}
{"msg":"reply","verb":"mount","pid":7,"status":"Success"}
not json
`), 0o600))
	assert.Equal(t, `{"msg":"reply","verb":"mount","pid":7,"status":"Success"}`, driverReply(log, "mount", "/a"))
	assert.Equal(t, `{"msg":"reply","verb":"mount","pid":8,"status":"Failure"}`, driverReply(log, "mount", "/b"))
	assert.Empty(t, driverReply(log, "unmount", "/a"))
}

// TestChartValuesRender renders the chart with this environment's values and checks what
// Start relies on: the scheduler configuration calls the extender on 127.0.0.1 with the CA,
// the extender DaemonSet listens there, the node ConfigMap carries the backstore and portal,
// the url-less rendering has the webhook Deployment with the managed resource, and no pod of
// the chart but the node DaemonSet's lands on a kubelet node.
func TestChartValuesRender(t *testing.T) {
	bins, err := cluster.DefaultBinaries()
	require.NoError(t, err)
	if _, err := os.Stat(bins.Helm); err != nil {
		testenv.Missing(t, "pinned helm ("+bins.Helm+")")
	}
	versions, err := cluster.LoadVersions()
	require.NoError(t, err)
	e := &Env{Dir: t.TempDir(), bins: bins, Backstore: "127.77.1.1:7717", Portal: "127.78.1.1:3260", extenderPort: 9443, extenderHealth: 9080}
	values := filepath.Join(e.Dir, "values.yaml")
	require.NoError(t, writeValues(values, e.chartValues("https://127.0.0.1:8443", []byte("-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n"))))
	args := []string{"template", Release, filepath.Join(repoRoot(), "charts", "petfabric"), "--namespace", Namespace, "--kube-version", versions["K8S_VERSION"]}
	out, err := e.helm(context.Background(), values, args...)
	require.NoError(t, err)
	objs, err := parseManifest(out)
	require.NoError(t, err)

	cfg, _, err := schedulerConfig(objs)
	require.NoError(t, err)
	require.Len(t, cfg.Extenders, 1)
	assert.Equal(t, "https://127.0.0.1:9443", cfg.Extenders[0].URLPrefix)
	assert.NotEmpty(t, cfg.Extenders[0].TLSConfig.CAData)
	assert.False(t, cfg.Extenders[0].Ignorable)

	ex, err := podTemplate(objs, "DaemonSet", Release+"-extender")
	require.NoError(t, err)
	exCtr, err := containerOf(ex, "extender")
	require.NoError(t, err)
	assert.Contains(t, exCtr.Args, "--listen=127.0.0.1:9443")

	cm, err := nodeConfigMap(objs)
	require.NoError(t, err)
	assert.Contains(t, cm["backstores.json"], `"127.77.1.1:7717"`)
	assert.Contains(t, cm["backstores.json"], `"127.78.1.1:3260"`)
	assert.Contains(t, cm["flex.json"], `"loop-standin"`)

	_, err = podTemplate(objs, "Deployment", Release+"-webhook")
	require.Error(t, err, "url mode renders no webhook Deployment")
	out, err = e.helm(context.Background(), values, append(args, "--set", "webhook.url=")...)
	require.NoError(t, err)
	whObjs, err := parseManifest(out)
	require.NoError(t, err)
	wh, err := podTemplate(whObjs, "Deployment", Release+"-webhook")
	require.NoError(t, err)
	whCtr, err := containerOf(wh, "webhook")
	require.NoError(t, err)
	assert.Contains(t, whCtr.Args, "--managed-resource=petfabric.io/datera")
	assert.Contains(t, whCtr.Args, "--cluster-id=demo")
}
