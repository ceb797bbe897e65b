package fake_test

import (
	"context"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/petfabric/petfabric/pkg/datera/fake"
)

// TestTgtExporterCHAP: a target demands the CHAP account of its spec, else the exporter's; the
// account is created in tgtd once and bound per target; an account reused with another secret
// is refused before tgtd would silently keep the first one.
func TestTgtExporterCHAP(t *testing.T) {
	const (
		iqn1 = "iqn.2013-05.com.daterainc:tc:01:sn:00000000000000a1"
		iqn2 = "iqn.2013-05.com.daterainc:tc:01:sn:00000000000000a2"
		iqn3 = "iqn.2013-05.com.daterainc:tc:01:sn:00000000000000a3"
	)
	ctx := context.Background()
	run := &recordingRunner{}
	dir := t.TempDir()
	e, err := fake.NewTgtExporter(ctx, fake.TgtOptions{BackingDir: dir, Runner: run,
		CHAP: &fake.CHAPAccount{User: "node-user", Password: "secret-123456"}})
	require.NoError(t, err)
	run.take()

	lun := func(n string) []fake.LUNSpec { return []fake.LUNSpec{{VolumeUUID: n, SizeGiB: 1}} }
	require.NoError(t, e.Export(ctx, fake.TargetSpec{IQN: iqn1, LUNs: lun("v1"), Initiators: []string{iqnA}}))
	assert.Equal(t, []string{
		"tgtadm --lld iscsi --op new --mode target --tid 1 --targetname " + iqn1,
		"tgtadm --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 --backing-store " + filepath.Join(dir, "v1.img"),
		"tgtadm --lld iscsi --op update --mode logicalunit --tid 1 --lun 1 --params scsi_sn=v1,vendor_id=DATERA,product_id=IBLOCK",
		"tgtadm --lld iscsi --op new --mode account --user node-user --password secret-123456",
		"tgtadm --lld iscsi --op bind --mode account --tid 1 --user node-user",
		"tgtadm --lld iscsi --op bind --mode target --tid 1 --initiator-name " + iqnA,
	}, run.take())

	require.NoError(t, e.Export(ctx, fake.TargetSpec{IQN: iqn2, LUNs: lun("v2"),
		CHAP: &fake.CHAPAccount{User: "si-user", Password: "si-secret-1234"}}))
	calls := run.take()
	assert.Contains(t, calls, "tgtadm --lld iscsi --op new --mode account --user si-user --password si-secret-1234")
	assert.Contains(t, calls, "tgtadm --lld iscsi --op bind --mode account --tid 2 --user si-user", "the spec's own account wins")

	require.NoError(t, e.Export(ctx, fake.TargetSpec{IQN: iqn3, LUNs: lun("v3")}))
	calls = run.take()
	assert.NotContains(t, calls, "tgtadm --lld iscsi --op new --mode account --user node-user --password secret-123456", "created once")
	assert.Contains(t, calls, "tgtadm --lld iscsi --op bind --mode account --tid 3 --user node-user")

	err = e.Export(ctx, fake.TargetSpec{IQN: "iqn.2013-05.com.daterainc:tc:01:sn:00000000000000a4", LUNs: lun("v4"),
		CHAP: &fake.CHAPAccount{User: "si-user", Password: "other-secret-99"}})
	require.ErrorContains(t, err, "already exists in tgtd with another password")
	assert.Equal(t, "tgtadm --lld iscsi --op delete --force --mode target --tid 4", run.take()[3], "the half-made target is removed")
}

// TestServerExportsStorageInstanceCHAP: a storage_instance with chap auth is exported with its
// initiator account; one with none carries no CHAP (the exporter's default then applies).
func TestServerExportsStorageInstanceCHAP(t *testing.T) {
	ex := &recordingExporter{exported: map[string]fake.TargetSpec{}}
	a := newAPI(t, fake.Options{Exporter: ex})
	for _, name := range []string{"pvc-chap", "pvc-none"} {
		a.mustOK(http.MethodPost, "/app_instances", createVolume(name, 1))
	}
	a.mustOK(http.MethodPut, "/app_instances/pvc-chap/storage_instances/storage-1", map[string]any{
		"auth": map[string]any{"type": "chap", "initiator_user_name": "node-user", "initiator_pswd": "secret-123456"}})
	for _, name := range []string{"pvc-chap", "pvc-none"} {
		a.mustOK(http.MethodPut, "/app_instances/"+name, map[string]any{"admin_state": "online"})
	}
	got := map[string]*fake.CHAPAccount{}
	for _, spec := range ex.exported {
		got[spec.IQN] = spec.CHAP
	}
	iqn := func(name string) string {
		return si0(data(a.mustOK(http.MethodGet, "/app_instances/"+name, nil)))["access"].(map[string]any)["iqn"].(string)
	}
	assert.Equal(t, &fake.CHAPAccount{User: "node-user", Password: "secret-123456"}, got[iqn("pvc-chap")])
	assert.Nil(t, got[iqn("pvc-none")])
}
