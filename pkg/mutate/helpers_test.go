package mutate

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"sigs.k8s.io/yaml"

	"github.com/petfabric/petfabric/pkg/pvoptions"
)

// testCfg is the webhook configuration of every test: the default class "datera" names no
// backstore, so the webhook's default applies to it.
var testCfg = Config{
	ClusterID:    "pf",
	DefaultClass: "datera",
	Defaults: map[string]string{
		pvoptions.OptBackstoreServer: "datera-mgmt.example.com:7718",
		OptSecretName:                "datera-credentials",
		OptSecretNamespace:           "petfabric-system",
	},
}

// testNSUID is the namespace UID of every test StatefulSet.
const testNSUID = "6f1c2a7e-0000-4000-8000-00000000beef"

var (
	optedIn    = map[string]string{InjectLabel: "enabled"}
	notOptedIn = map[string]string{"kubernetes.io/metadata.name": "x"}
)

// readFixture returns testdata/name as JSON documents (YAML documents split on "---").
func readFixture(t testing.TB, name string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	require.NoError(t, err)
	var docs [][]byte
	for _, d := range bytes.Split(b, []byte("\n---\n")) {
		j, err := yaml.YAMLToJSON(d)
		require.NoError(t, err, name)
		if string(j) != "null" {
			docs = append(docs, j)
		}
	}
	return docs
}

// loadClasses reads testdata/storageclasses.yaml: the Datera classes by name.
func loadClasses(t testing.TB) map[string]Class {
	t.Helper()
	out := map[string]Class{}
	for _, d := range readFixture(t, "storageclasses.yaml") {
		var sc storagev1.StorageClass
		require.NoError(t, json.Unmarshal(d, &sc))
		if c, ok := ClassFromStorageClass(&sc); ok {
			out[c.Name] = c
		}
	}
	require.Len(t, out, 3)
	return out
}

// loadSTS reads a StatefulSet fixture: the typed object and its JSON as the apiserver would
// send it.
func loadSTS(t testing.TB, name string) (*appsv1.StatefulSet, []byte) {
	t.Helper()
	docs := readFixture(t, name)
	require.Len(t, docs, 1)
	var sts appsv1.StatefulSet
	require.NoError(t, json.Unmarshal(docs[0], &sts))
	return &sts, docs[0]
}

func loadPV(t testing.TB, name string) *corev1.PersistentVolume {
	t.Helper()
	docs := readFixture(t, name)
	require.Len(t, docs, 1)
	var pv corev1.PersistentVolume
	require.NoError(t, json.Unmarshal(docs[0], &pv))
	return &pv
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}

// applyPatch applies an RFC 6902 patch the way the apiserver does (evanphx/json-patch).
func applyPatch(t testing.TB, raw, patch []byte) []byte {
	t.Helper()
	p, err := jsonpatch.DecodePatch(patch)
	require.NoError(t, err, "patch %s", patch)
	out, err := p.Apply(raw)
	require.NoError(t, err, "patch %s", patch)
	return out
}

// stsFromJSON decodes a StatefulSet.
func stsFromJSON(t testing.TB, raw []byte) *appsv1.StatefulSet {
	t.Helper()
	var sts appsv1.StatefulSet
	require.NoError(t, json.Unmarshal(raw, &sts))
	return &sts
}
