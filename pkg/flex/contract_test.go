package flex

import (
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/petfabric/petfabric/pkg/datera"
	"github.com/petfabric/petfabric/pkg/pvoptions"
)

// TestParseMountRequestReadsEveryContractVersion: the driver mounts a PV written by the webhook
// now (the golden file pkg/mutate pins) and one written by a version 1 webhook (pkg/pvoptions'
// fixture: no accessMode, no owner), as kubelet hands their options over.
func TestParseMountRequestReadsEveryContractVersion(t *testing.T) {
	const dir = "/var/lib/kubelet/pods/u/volumes/datera~iscsi/v"
	kubelet := `"kubernetes.io/fsType":"ext4","kubernetes.io/readwrite":"rw","kubernetes.io/pvOrVolumeName":"pv",`

	b, err := os.ReadFile("../mutate/testdata/pv-options.golden.json")
	require.NoError(t, err)
	r, err := ParseMountRequest(dir, "{"+kubelet+string(b[1:]), "xfs")
	require.NoError(t, err, "version 2")
	assert.Equal(t, "pf_default_pv-claim-test-petset-1", r.VolumeID)
	assert.Equal(t, datera.CreateVolumeRequest{Name: r.VolumeID, SizeGiB: 100, ReplicaCount: 2, Template: "full_tpl",
		IPPool: "pool_a", PlacementMode: datera.PlacementAllFlash, Description: "petfabric FlexVolume pv"}, r.Volume)
	assert.Equal(t, "https://datera.example.com:7718", r.Endpoint)
	assert.Equal(t, "/root/shop", r.Tenant)
	assert.Equal(t, int64(5000), r.MaxIOPS)
	assert.Equal(t, int64(102400), r.MaxBWKiB)
	assert.Equal(t, pvoptions.AccessReadWriteOnce, r.AccessMode)
	assert.True(t, r.HasOwner)
	assert.Equal(t, pvoptions.Owner{ClusterID: "pf", Namespace: "default", Claim: "pv-claim-test-petset-1", NamespaceUID: "6f1c2a7e-0000-4000-8000-00000000beef"}, r.Owner)
	assert.Empty(t, r.Ignored, "every key the webhook writes is known")

	b, err = os.ReadFile("../pvoptions/testdata/pv-options-v1.json")
	require.NoError(t, err)
	r, err = ParseMountRequest(dir, "{"+kubelet+string(b[1:]), "xfs")
	require.NoError(t, err, "version 1")
	assert.Equal(t, "default_pv-claim-test-petset-1", r.VolumeID)
	assert.Equal(t, int64(100), r.Volume.SizeGiB)
	assert.Equal(t, 3, r.Volume.ReplicaCount)
	assert.Equal(t, "http://tlx170.tlx.daterainc.com:7717", r.Endpoint)
	assert.Equal(t, pvoptions.AccessReadWriteOnce, r.AccessMode, "a version 1 PV is ReadWriteOnce")
	assert.False(t, r.HasOwner, "a version 1 PV records no owner")
	assert.False(t, r.ReadOnly)
	assert.Empty(t, r.Ignored)
}
