package flex

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/petfabric/petfabric/pkg/datera"
)

func optsJSON(kv map[string]string) string {
	b, _ := json.Marshal(kv)
	return string(b)
}

func base(extra ...string) map[string]string {
	m := map[string]string{"volumeID": "pv_1", "size": "10", "backstoreServer": "192.0.2.10:7718"}
	for i := 0; i < len(extra); i += 2 {
		if extra[i+1] == "" {
			delete(m, extra[i])
		} else {
			m[extra[i]] = extra[i+1]
		}
	}
	return m
}

func TestParseMountRequest(t *testing.T) {
	const dir = "/var/lib/kubelet/pods/u/volumes/datera~iscsi/v"
	tests := []struct {
		name  string
		dir   string
		opts  string
		err   string
		check func(t *testing.T, r *MountRequest)
	}{
		{name: "minimal", opts: optsJSON(base()), check: func(t *testing.T, r *MountRequest) {
			assert.Equal(t, "pv_1", r.VolumeID)
			assert.Equal(t, int64(10), r.Volume.SizeGiB)
			assert.Equal(t, "https://192.0.2.10:7718", r.Endpoint)
			assert.Equal(t, "xfs", r.FSType, "node default")
			assert.False(t, r.ReadOnly)
		}},
		{name: "all options", opts: optsJSON(base("replica", "2", "placementMode", "all_flash", "maxIops", "500",
			"maxBW", "10240", "ipPool", "pool-b", "tenant", "team-a", "kubernetes.io/fsType", "ext4",
			"kubernetes.io/readwrite", "ro", "kubernetes.io/pod.name", "web-0", "kubernetes.io/pod.namespace", "ns",
			"retainPolicy", "never", "kubernetes.io/secret/username", "YWRtaW4=")),
			check: func(t *testing.T, r *MountRequest) {
				assert.Equal(t, 2, r.Volume.ReplicaCount)
				assert.Equal(t, datera.PlacementAllFlash, r.Volume.PlacementMode)
				assert.Equal(t, int64(500), r.MaxIOPS)
				assert.Equal(t, int64(10240), r.MaxBWKiB)
				assert.Equal(t, "pool-b", r.Volume.IPPool)
				assert.Equal(t, "/root/team-a", r.Tenant)
				assert.Equal(t, "ext4", r.FSType)
				assert.True(t, r.ReadOnly)
				assert.Equal(t, "ns/web-0", r.Pod)
				assert.Equal(t, []string{"retainPolicy"}, r.Ignored)
				assert.Equal(t, "admin", r.Secrets["username"])
			}},
		{name: "template without size", opts: optsJSON(base("size", "", "template", "gold")), check: func(t *testing.T, r *MountRequest) {
			assert.Equal(t, "gold", r.Volume.Template)
			assert.Zero(t, r.Volume.SizeGiB)
		}},
		{name: "url backstore", opts: optsJSON(base("backstoreServer", "http://127.0.0.1:40000")), check: func(t *testing.T, r *MountRequest) {
			assert.Equal(t, "http://127.0.0.1:40000", r.Endpoint)
		}},
		{name: "traversal", opts: optsJSON(base("volumeID", "../../etc")), err: "not a valid Datera volume name"},
		{name: "dot dot", opts: optsJSON(base("volumeID", "..")), err: "not a valid Datera volume name"},
		{name: "slash", opts: optsJSON(base("volumeID", "abc/def")), err: "not a valid Datera volume name"},
		{name: "too long", opts: optsJSON(base("volumeID", "a234567890123456789012345678901234567890123456789012345678901234x")), err: "not a valid"},
		{name: "leading digit", opts: optsJSON(base("volumeID", "1abc")), err: "not a valid"},
		{name: "no volumeID", opts: optsJSON(base("volumeID", "")), err: "volumeID is required"},
		{name: "no size", opts: optsJSON(base("size", "")), err: "size is required"},
		{name: "size text", opts: optsJSON(base("size", "10Gi")), err: "option size"},
		{name: "size too big", opts: optsJSON(base("size", "40000")), err: "option size"},
		{name: "replica 0", opts: optsJSON(base("replica", "0")), err: "option replica"},
		{name: "placement", opts: optsJSON(base("placementMode", "fast")), err: "placementMode"},
		{name: "maxIops negative", opts: optsJSON(base("maxIops", "-1")), err: "option maxIops"},
		{name: "bad template", opts: optsJSON(base("template", "a b")), err: "option template"},
		{name: "bad ipPool", opts: optsJSON(base("ipPool", "../x")), err: "option ipPool"},
		{name: "bad tenant", opts: optsJSON(base("tenant", "a/../b")), err: "option tenant"},
		{name: "no backstore", opts: optsJSON(base("backstoreServer", "")), err: "backstoreServer is required"},
		{name: "bad fsType", opts: optsJSON(base("kubernetes.io/fsType", "ntfs")), err: "not supported"},
		{name: "bad readwrite", opts: optsJSON(base("kubernetes.io/readwrite", "rx")), err: "want rw or ro"},
		{name: "secret not base64", opts: optsJSON(base("kubernetes.io/secret/password", "not base64!")), err: `secret key "password"`},
		{name: "malformed", opts: `{"volumeID":`, err: "malformed options JSON"},
		{name: "number value", opts: `{"volumeID":"pv_1","size":10}`, err: "malformed options JSON"},
		{name: "array", opts: `["a"]`, err: "malformed options JSON"},
		{name: "null", opts: `null`, err: "null"},
		{name: "trailing", opts: `{} {}`, err: "trailing data"},
		{name: "relative dir", dir: "pods/x", opts: optsJSON(base()), err: "not absolute"},
		{name: "unclean dir", dir: "/var/lib/../x", opts: optsJSON(base()), err: "not clean"},
		{name: "root dir", dir: "/", opts: optsJSON(base()), err: "is /"},
		{name: "newline dir", dir: "/a\nb", opts: optsJSON(base()), err: "control characters"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := tc.dir
			if d == "" {
				d = dir
			}
			r, err := ParseMountRequest(d, tc.opts, "xfs")
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			tc.check(t, r)
		})
	}
}

func TestDecideFilesystem(t *testing.T) {
	tests := []struct {
		name     string
		probe    DeviceProbe
		req      string
		ro       bool
		want     fsDecision
		err      string
		wantNote bool
	}{
		{"blank rw formats", DeviceProbe{Blank: true}, "xfs", false, fsDecision{FSType: "xfs", Format: true}, "", false},
		{"blank ro refuses", DeviceProbe{Blank: true}, "xfs", true, fsDecision{}, "read-only", false},
		{"same fs mounts", DeviceProbe{FSType: "ext4"}, "ext4", false, fsDecision{FSType: "ext4"}, "", false},
		{"other fs mounts as is", DeviceProbe{FSType: "ext4"}, "xfs", false, fsDecision{FSType: "ext4"}, "", true},
		{"ro existing", DeviceProbe{FSType: "xfs"}, "xfs", true, fsDecision{FSType: "xfs"}, "", false},
		{"swap refused", DeviceProbe{FSType: "swap"}, "xfs", false, fsDecision{}, `holds "swap"`, false},
		{"LUKS refused", DeviceProbe{FSType: "crypto_LUKS"}, "xfs", false, fsDecision{}, "refusing", false},
		{"partitions refused", DeviceProbe{Other: "a partition table (gpt)"}, "xfs", false, fsDecision{}, "refusing to format", false},
		{"unknown data refused", DeviceProbe{Other: "data without a signature blkid recognizes"}, "xfs", false, fsDecision{}, "may hold data", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decideFilesystem(tc.probe, tc.req, tc.ro)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.wantNote, got.Note != "")
			got.Note = ""
			assert.Equal(t, tc.want, got)
		})
	}
}
