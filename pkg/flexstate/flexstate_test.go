package flexstate

import (
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/petfabric/petfabric/pkg/pvoptions"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata from what the code writes now")

const (
	recordGolden = "testdata/record.golden.json"
	// recordV1NoOwner is a version 1 record written before the access mode and the owner were
	// recorded (a volume of a version 1 PV looks the same).
	recordV1NoOwner = "testdata/record-v1-no-owner.json"
)

// goldenRecord sets every field, so the golden file shows each one's wire name.
func goldenRecord() *Record {
	return &Record{
		VolumeID: "pf_default_data-db-0", Phase: PhaseMounted, BackstoreServer: "datera.example.com:7718",
		Endpoint: "https://datera.example.com:7718", Tenant: "/root/shop", StorageInstance: "storage-1",
		IQN: "iqn.2013-05.com.daterainc:tc:01:sn:1", Portals: []string{"192.0.2.10:3260", "192.0.2.11:3260"}, LUN: 0,
		Device: "/dev/sdb", DevicePaths: []string{"/dev/disk/by-path/ip-192.0.2.10:3260-iscsi-iqn.2013-05.com.daterainc:tc:01:sn:1-lun-0"},
		GlobalMountPath: "/var/lib/kubelet/plugins/datera~iscsi/mounts/pf_default_data-db-0", FSType: "xfs", ReadOnly: true,
		AccessMode:    pvoptions.AccessReadOnlyMany,
		Owner:         &pvoptions.Owner{ClusterID: "pf", Namespace: "default", Claim: "data-db-0", NamespaceUID: "6f1c2a7e-0000-4000-8000-00000000beef"},
		InitiatorName: "iqn.1993-08.org.debian:01:node-a", Mounts: []string{"/var/lib/kubelet/pods/u/volumes/datera~iscsi/data"},
		UpdatedAt: time.Date(2026, 11, 30, 11, 0, 0, 0, time.UTC),
	}
}

// TestRecordGolden pins the record's wire format: the driver writes it, the agent reads it, and
// the two are upgraded separately (the version rules are in the package documentation; go test
// -update regenerates the file; review the diff).
func TestRecordGolden(t *testing.T) {
	got, err := Encode(goldenRecord())
	require.NoError(t, err)
	if *update {
		require.NoError(t, os.WriteFile(recordGolden, got, 0o644))
	}
	want, err := os.ReadFile(recordGolden)
	require.NoError(t, err, "run go test -update to create it")
	assert.Equal(t, string(want), string(got), "the state record's wire format changed: a contract change (go test -update, then review)")

	r, err := Decode(want)
	require.NoError(t, err)
	wantRec := goldenRecord()
	wantRec.Version = Version
	assert.Equal(t, wantRec, r)
}

// TestDecodeVersions: a reader reads the current version and the record of before the access
// mode and owner were added; it refuses a newer writer's record and a record with no version,
// naming the version.
func TestDecodeVersions(t *testing.T) {
	b, err := os.ReadFile(recordV1NoOwner)
	require.NoError(t, err)
	r, err := Decode(b)
	require.NoError(t, err)
	assert.Equal(t, "default_data-db-0", r.VolumeID)
	assert.Equal(t, PhaseMounted, r.Phase)
	assert.Empty(t, r.AccessMode, "absent: a version 1 PV's volume, ReadWriteOnce")
	assert.Nil(t, r.Owner)

	for v := oldestVersion; v <= Version; v++ {
		_, err := Decode([]byte(`{"version":` + strconv.Itoa(v) + `,"volumeID":"vol","phase":"mounted"}`))
		require.NoError(t, err, "version %d", v)
	}
	assert.GreaterOrEqual(t, Version-oldestVersion, min(Version-1, 1), "a reader accepts at least the previous version")

	_, err = Decode([]byte(`{"version":2,"volumeID":"vol","phase":"mounted"}`))
	require.ErrorIs(t, err, ErrUnknownVersion)
	require.ErrorContains(t, err, "version 2")
	_, err = Decode([]byte(`{"volumeID":"vol","phase":"mounted"}`))
	require.ErrorIs(t, err, ErrUnknownVersion)
	_, err = Decode([]byte(`{garbage`))
	require.ErrorContains(t, err, "not valid JSON")
}

func writeRecord(t testing.TB, dir, id, phase string) {
	t.Helper()
	require.NoError(t, os.WriteFile(filepath.Join(dir, id+".json"), []byte(`{"version":1,"volumeID":"`+id+`","phase":"`+phase+`"}`), 0o644))
}

// TestAttached is the agent's reading of the state directory: every record not detached,
// unreadable files and records of a newer version counted (and named), temp files,
// subdirectories and other names skipped.
func TestAttached(t *testing.T) {
	dir := t.TempDir()
	writeRecord(t, dir, "vol-b", PhaseMounted)
	writeRecord(t, dir, "vol-a", PhaseAttaching)
	writeRecord(t, dir, "vol-c", PhaseDetached)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "vol-d.json"), []byte("{garbage"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "vol-f.json"), []byte(`{"version":9,"volumeID":"vol-f","phase":"detached"}`), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, ".vol-e.json.tmp"), []byte("{}"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, ".vol-g.json"), []byte("{}"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("x"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "1bad.json"), []byte("{}"), 0o644))
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "locks"), 0o755))
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "credentials"), 0o700))
	writeRecord(t, filepath.Join(dir, "credentials"), "vol-z", PhaseMounted)

	vols, unreadable, err := Attached(dir)
	require.NoError(t, err)
	assert.Equal(t, []string{"vol-a", "vol-b", "vol-d", "vol-f"}, vols, "detached excluded; unreadable and newer kept; temp files, other names and subdirs skipped")
	assert.Equal(t, []string{"vol-d.json", "vol-f.json"}, unreadable)

	vols, _, err = Attached(filepath.Join(dir, "never-created"))
	require.NoError(t, err)
	assert.Equal(t, []string{}, vols)
}

// TestRecordMounts: the pod mounts a record keeps, sorted and without duplicates.
func TestRecordMounts(t *testing.T) {
	var r Record
	assert.True(t, r.AddMount("/b"))
	assert.True(t, r.AddMount("/a"))
	assert.False(t, r.AddMount("/a"))
	assert.Equal(t, []string{"/a", "/b"}, r.Mounts)
	assert.True(t, r.RemoveMount("/a"))
	assert.False(t, r.RemoveMount("/a"))
	assert.Equal(t, []string{"/b"}, r.Mounts)
}

func TestVolumeIDOf(t *testing.T) {
	for name, want := range map[string]string{"vol-a.json": "vol-a", "pf_ns_claim.json": "pf_ns_claim"} {
		id, ok := VolumeIDOf(name)
		assert.True(t, ok, name)
		assert.Equal(t, want, id)
		assert.Equal(t, name, FileName(id))
	}
	for _, name := range []string{".vol-a.json", "vol-a.json.tmp", "vol-a", "1ab.json", "../x.json", ".json"} {
		_, ok := VolumeIDOf(name)
		assert.False(t, ok, name)
	}
}
