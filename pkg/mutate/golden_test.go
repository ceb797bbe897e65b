package mutate

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"

	"github.com/petfabric/petfabric/pkg/pvoptions"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata from what the code writes now")

// PVOptionsGolden is the golden file of the PV contract's wire format: the full
// spec.flexVolume.options map of a PV the webhook writes, every option set. The readers' tests
// (pvoptions, flex, placement) parse this same file.
const PVOptionsGolden = "testdata/pv-options.golden.json"

// TestPVOptionsGolden pins the options the webhook writes (contract version 2). A change to
// this file is a change to the contract between programs that are upgraded separately: the
// readers of the previous version must still accept what is written (go test -update
// regenerates it; review the diff).
func TestPVOptionsGolden(t *testing.T) {
	class := Class{Name: "datera-full", ReclaimPolicy: corev1.PersistentVolumeReclaimDelete, Parameters: map[string]string{
		pvoptions.OptReplica: "2", pvoptions.OptFSType: "ext4", pvoptions.OptTemplate: "full_tpl",
		pvoptions.OptPlacementMode: "all_flash", pvoptions.OptMaxIOPS: "5000", pvoptions.OptMaxBW: "102400",
		pvoptions.OptIPPool: "pool_a", pvoptions.OptTenant: "/root/shop", pvoptions.OptBackstoreServer: "datera.example.com:7718",
		OptSecretName: "datera-credentials", OptSecretNamespace: "petfabric-system",
	}}
	sts, _ := loadSTS(t, "test-petset.yaml")
	sts.Spec.VolumeClaimTemplates[0].Spec.StorageClassName = &class.Name
	plan, err := Decide(testCfg, Input{NamespaceUID: testNSUID, StatefulSet: sts, Classes: map[string]Class{class.Name: class}})
	require.NoError(t, err)
	require.Len(t, plan.Templates, 1)
	pv, err := plan.Ordinal(plan.Templates[0], 1).PersistentVolume(testCfg)
	require.NoError(t, err)
	got, err := json.MarshalIndent(pv.Spec.FlexVolume.Options, "", "  ") // keys sorted
	require.NoError(t, err)
	got = append(got, '\n')
	if *update {
		require.NoError(t, os.WriteFile(filepath.FromSlash(PVOptionsGolden), got, 0o644))
	}
	want, err := os.ReadFile(filepath.FromSlash(PVOptionsGolden))
	require.NoError(t, err, "run go test -update to create it")
	assert.Equal(t, string(want), string(got), "the PV options the webhook writes changed: a contract change (go test -update, then review)")

	// Every key written is a key of the contract, and the readers' parser reads back what was
	// written.
	for k := range pv.Spec.FlexVolume.Options {
		assert.True(t, pvoptions.Known(k), "option %s is not in pkg/pvoptions", k)
	}
	v, err := pvoptions.Parse(pv.Spec.FlexVolume.Options)
	require.NoError(t, err)
	assert.Equal(t, pv.Spec.FlexVolume.Options, v.Options(), "Parse then Options is the identity on what the webhook writes")
}
