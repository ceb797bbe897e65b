package pvoptions

import (
	"encoding/json"
	"maps"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Contract fixtures the readers' tests share: what the webhook writes now (the golden file its
// test pins) and what a version 1 webhook wrote.
const (
	GoldenV2  = "../mutate/testdata/pv-options.golden.json"
	FixtureV1 = "testdata/pv-options-v1.json"
)

func readOptions(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var opts map[string]string
	require.NoError(t, json.Unmarshal(b, &opts))
	return opts
}

// TestParseContractVersions: a reader reads the options the webhook writes now and those of a
// version 1 PV (no accessMode, no owner: ReadWriteOnce, no owner).
func TestParseContractVersions(t *testing.T) {
	v2, err := Parse(readOptions(t, GoldenV2))
	require.NoError(t, err)
	assert.Equal(t, Volume{
		VolumeID: "pf_default_pv-claim-test-petset-1", SizeGiB: 100, Replica: 2, BackstoreServer: "datera.example.com:7718",
		Template: "full_tpl", PlacementMode: "all_flash", MaxIOPS: 5000, MaxBWKiB: 102400, IPPool: "pool_a", Tenant: "/root/shop",
		AccessMode: AccessReadWriteOnce, HasOwner: true,
		Owner: Owner{ClusterID: "pf", Namespace: "default", Claim: "pv-claim-test-petset-1", NamespaceUID: "6f1c2a7e-0000-4000-8000-00000000beef"},
	}, v2)

	v1opts := readOptions(t, FixtureV1)
	v1, err := Parse(v1opts)
	require.NoError(t, err)
	assert.Equal(t, Volume{
		VolumeID: "default_pv-claim-test-petset-1", SizeGiB: 100, Replica: 3, BackstoreServer: "tlx170.tlx.daterainc.com:7717",
		PlacementMode: "hybrid", MaxIOPS: 1000, AccessMode: AccessReadWriteOnce,
	}, v1, "a version 1 PV is ReadWriteOnce with no recorded owner")
	for k := range v1opts {
		assert.True(t, Known(k), "version 1 key %s is still known", k)
	}
}

// TestOptionsRoundTrip: Parse reads back exactly what Options writes.
func TestOptionsRoundTrip(t *testing.T) {
	for name, v := range map[string]Volume{
		"minimal v2":        {VolumeID: "vol", SizeGiB: 1, BackstoreServer: "h:7717", AccessMode: AccessReadWriteOnce},
		"template, no size": {VolumeID: "vol", Template: "tpl", BackstoreServer: "h:7718", AccessMode: AccessReadOnlyMany},
		"everything": {VolumeID: "c_ns_claim", SizeGiB: 32768, Replica: 5, BackstoreServer: "[2001:db8::1]:7718", Template: "tpl",
			PlacementMode: "single_flash", MaxIOPS: 1, MaxBWKiB: 2, IPPool: "pool", Tenant: "/root", AccessMode: AccessReadWriteOnce,
			Owner: Owner{ClusterID: "c", Namespace: "ns", Claim: "claim", NamespaceUID: "uid"}, HasOwner: true},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := Parse(v.Options())
			require.NoError(t, err)
			assert.Equal(t, v, got)
		})
	}
}

// TestParseRefuses: each option's rule, with an error that names the option.
func TestParseRefuses(t *testing.T) {
	base := readOptions(t, GoldenV2)
	cases := []struct {
		name, key, value, err string
	}{
		{"no volumeID", OptVolumeID, "", "volumeID is required"},
		{"volumeID traversal", OptVolumeID, "../../etc", "not a valid Datera volume name"},
		{"volumeID leading digit", OptVolumeID, "1abc", "not a valid Datera volume name"},
		{"volumeID too long", OptVolumeID, "a234567890123456789012345678901234567890123456789012345678901234x", "not a valid Datera volume name"},
		{"size text", OptSize, "10Gi", "option size"},
		{"size too big", OptSize, "40000", "option size"},
		{"size zero", OptSize, "0", "option size"},
		{"size padded", OptSize, " 10", "option size"},
		{"replica 0", OptReplica, "0", "option replica"},
		{"replica 6", OptReplica, "6", "option replica"},
		{"placementMode", OptPlacementMode, "fast", "option placementMode"},
		{"maxIops negative", OptMaxIOPS, "-1", "option maxIops"},
		{"maxBW too big", OptMaxBW, "99999999999", "option maxBW"},
		{"template", OptTemplate, "a b", "option template"},
		{"ipPool", OptIPPool, "../x", "option ipPool"},
		{"tenant", OptTenant, "a/../b", "option tenant"},
		{"no backstoreServer", OptBackstoreServer, "", "backstoreServer is required"},
		{"backstoreServer port unknown", OptBackstoreServer, "h:9999", "option backstoreServer"},
		{"accessMode", OptAccessMode, "ReadWriteMany", "option accessMode"},
		{"owner half there", OptNamespaceUID, "", "come together"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			opts := maps.Clone(base)
			if tc.value == "" {
				delete(opts, tc.key)
			} else {
				opts[tc.key] = tc.value
			}
			_, err := Parse(opts)
			require.ErrorContains(t, err, tc.err)
		})
	}
	t.Run("no size without a template", func(t *testing.T) {
		opts := maps.Clone(base)
		delete(opts, OptSize)
		delete(opts, OptTemplate)
		_, err := Parse(opts)
		require.ErrorContains(t, err, "size is required")
	})
}

// TestWriterFormsReadAsThemselves: what a writer may write (ValidTenant, ValidBackstoreServer)
// reads back unchanged, and the reader's extra forms are refused to a writer.
func TestWriterFormsReadAsThemselves(t *testing.T) {
	for _, tn := range []string{"/root", "/root/shop", "/root/team_a"} {
		require.True(t, ValidTenant(tn), tn)
		got, err := ParseTenant(tn)
		require.NoError(t, err)
		assert.Equal(t, tn, got)
	}
	for _, tn := range []string{"shop", "/other/x", "/root/a/b", "/root/", ""} {
		assert.False(t, ValidTenant(tn), "a writer never writes %q", tn)
	}
	got, err := ParseTenant("team-a")
	require.NoError(t, err)
	assert.Equal(t, "/root/team-a", got, "a reader still reads a bare tenant name")

	for _, bs := range []string{"h:7717", "datera.example.com:7718", "[2001:db8::1]:7718"} {
		assert.True(t, ValidBackstoreServer(bs), bs)
		_, err := ParseBackstoreServer(bs)
		require.NoError(t, err, bs)
	}
	for _, bs := range []string{"http://127.0.0.1:40000", "datera.example", "h:9999", ":7717", ""} {
		assert.False(t, ValidBackstoreServer(bs), "a writer never writes %q", bs)
	}
	ep, err := ParseBackstoreServer("http://127.0.0.1:40000")
	require.NoError(t, err)
	assert.Equal(t, "http://127.0.0.1:40000", ep, "a reader still reads a URL (a simulator's PV made by hand)")
}
