package fake_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/petfabric/petfabric/pkg/datera/fake"
)

// recordingRunner stands in for tgtadm: it records command lines and fails those containing
// failOn.
type recordingRunner struct {
	mu     sync.Mutex
	calls  []string
	show   string
	failOn string
}

func (r *recordingRunner) Run(_ context.Context, name string, args ...string) ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	line := name + " " + strings.Join(args, " ")
	r.calls = append(r.calls, line)
	if r.failOn != "" && strings.Contains(line, r.failOn) {
		return nil, errors.New("tgtadm: injected failure")
	}
	if strings.Contains(line, "--op show") {
		return []byte(r.show), nil
	}
	return nil, nil
}

func (r *recordingRunner) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.calls
	r.calls = nil
	return out
}

const sn = "1e52946a-1111-4222-8333-444455556666"

func TestTgtExporterCommands(t *testing.T) {
	run := &recordingRunner{show: "Target 1: iqn.other:a\n    System information:\nTarget 3: iqn.other:b\n"}
	dir := t.TempDir()
	e, err := fake.NewTgtExporter(context.Background(), fake.TgtOptions{ControlPort: 4999, BackingDir: dir, Runner: run})
	require.NoError(t, err)
	assert.Equal(t, []string{"tgtadm -C 4999 --lld iscsi --op show --mode target"}, run.take())
	ctx := context.Background()
	const iqn = "iqn.2013-05.com.daterainc:tc:01:sn:0123456789abcdef"

	require.NoError(t, e.Export(ctx, fake.TargetSpec{IQN: iqn, LUNs: []fake.LUNSpec{{VolumeUUID: sn, SizeGiB: 2}}, Initiators: []string{iqnA}}))
	backing := filepath.Join(dir, sn+".img")
	assert.Equal(t, []string{
		"tgtadm -C 4999 --lld iscsi --op new --mode target --tid 2 --targetname " + iqn, // tid 1 and 3 are taken
		"tgtadm -C 4999 --lld iscsi --op new --mode logicalunit --tid 2 --lun 1 --backing-store " + backing,
		"tgtadm -C 4999 --lld iscsi --op update --mode logicalunit --tid 2 --lun 1 --params scsi_sn=" + sn + ",vendor_id=DATERA,product_id=IBLOCK",
		"tgtadm -C 4999 --lld iscsi --op bind --mode target --tid 2 --initiator-name " + iqnA,
	}, run.take())
	st, err := os.Stat(backing)
	require.NoError(t, err)
	assert.EqualValues(t, 2<<30, st.Size(), "sparse file of the volume size")

	require.NoError(t, e.SetACL(ctx, iqn, false, []string{iqnB}))
	assert.Equal(t, []string{
		"tgtadm -C 4999 --lld iscsi --op bind --mode target --tid 2 --initiator-name " + iqnB,
		"tgtadm -C 4999 --lld iscsi --op unbind --mode target --tid 2 --initiator-name " + iqnA,
	}, run.take())
	require.NoError(t, e.SetACL(ctx, iqn, true, []string{iqnB}))
	assert.Equal(t, []string{"tgtadm -C 4999 --lld iscsi --op bind --mode target --tid 2 --initiator-address ALL"}, run.take())
	require.NoError(t, e.SetACL(ctx, iqn, true, []string{iqnB}))
	assert.Empty(t, run.take(), "no change, no command")
	require.NoError(t, e.Export(ctx, fake.TargetSpec{IQN: iqn, AllowAll: false, Initiators: []string{iqnB}}))
	assert.Equal(t, []string{"tgtadm -C 4999 --lld iscsi --op unbind --mode target --tid 2 --initiator-address ALL"}, run.take(),
		"exporting an exported target only syncs its ACL")

	require.NoError(t, e.Grow(ctx, sn, 3))
	st, err = os.Stat(backing)
	require.NoError(t, err)
	assert.EqualValues(t, 3<<30, st.Size())

	require.NoError(t, e.Unexport(ctx, iqn))
	assert.Equal(t, []string{"tgtadm -C 4999 --lld iscsi --op delete --force --mode target --tid 2"}, run.take())
	require.NoError(t, e.Unexport(ctx, iqn))
	require.NoError(t, e.SetACL(ctx, iqn, false, []string{iqnA}))
	assert.Empty(t, run.take(), "a target that is not exported needs no command")
	_, err = os.Stat(backing)
	require.NoError(t, err, "offline keeps the data")

	require.NoError(t, e.Destroy(ctx, sn))
	_, err = os.Stat(backing)
	assert.ErrorIs(t, err, os.ErrNotExist)
	require.NoError(t, e.Destroy(ctx, sn), "destroying twice is fine")
}

func TestTgtExporterUndoesHalfCreatedTargets(t *testing.T) {
	run := &recordingRunner{failOn: "--op bind"}
	e, err := fake.NewTgtExporter(context.Background(), fake.TgtOptions{BackingDir: t.TempDir(), Runner: run})
	require.NoError(t, err)
	run.take()
	const iqn = "iqn.2013-05.com.daterainc:tc:01:sn:00000000000000aa"
	err = e.Export(context.Background(), fake.TargetSpec{IQN: iqn, LUNs: []fake.LUNSpec{{VolumeUUID: sn, SizeGiB: 1}}, Initiators: []string{iqnA}})
	require.ErrorContains(t, err, "injected failure")
	calls := run.take()
	assert.Equal(t, "tgtadm --lld iscsi --op delete --force --mode target --tid 1", calls[len(calls)-1], "the half-made target is removed")

	run.failOn = ""
	require.NoError(t, e.Export(context.Background(), fake.TargetSpec{IQN: iqn, LUNs: []fake.LUNSpec{{VolumeUUID: sn, SizeGiB: 1}}}))
	assert.Contains(t, run.take()[0], "--tid 1 ", "its tid was freed")
}

// recordingExporter checks what the Server asks of an Exporter.
type recordingExporter struct {
	mu        sync.Mutex
	events    []string
	failNext  bool
	exported  map[string]fake.TargetSpec
	destroyed []string
}

func (r *recordingExporter) note(ev string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
	if r.failNext {
		r.failNext = false
		return errors.New("tgtd is down")
	}
	return nil
}

func (r *recordingExporter) Export(_ context.Context, t fake.TargetSpec) error {
	if err := r.note("export"); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.exported[t.IQN] = t
	return nil
}

func (r *recordingExporter) SetACL(_ context.Context, iqn string, allowAll bool, initiators []string) error {
	if err := r.note("acl " + strings.Join(initiators, ",")); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	spec := r.exported[iqn]
	spec.Initiators, spec.AllowAll = initiators, allowAll
	r.exported[iqn] = spec
	return nil
}

func (r *recordingExporter) Unexport(_ context.Context, iqn string) error {
	if err := r.note("unexport"); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.exported, iqn)
	return nil
}

func (r *recordingExporter) Grow(_ context.Context, uuid string, size int64) error {
	return r.note("grow")
}

func (r *recordingExporter) Destroy(_ context.Context, uuid string) error {
	r.mu.Lock()
	r.destroyed = append(r.destroyed, uuid)
	r.mu.Unlock()
	return r.note("destroy")
}

func TestServerDrivesExporter(t *testing.T) {
	ex := &recordingExporter{exported: map[string]fake.TargetSpec{}}
	a := newAPI(t, fake.Options{Exporter: ex})
	a.mustOK(http.MethodPost, "/initiators", map[string]any{"id": iqnA, "name": "node-a", "force": true})
	ai := data(a.mustOK(http.MethodPost, "/app_instances", createVolume("pvc-ex", 2)))
	iqn := si0(ai)["access"].(map[string]any)["iqn"].(string)
	volUUID := si0(ai)["volumes"].([]any)[0].(map[string]any)["uuid"].(string)
	const acl = "/app_instances/pvc-ex/storage_instances/storage-1/acl_policy"

	a.mustOK(http.MethodPut, acl+"/initiators", map[string]any{"op": "add", "path": "/initiators/" + iqnA})
	assert.Empty(t, ex.events, "an offline volume is not exported")

	ex.failNext = true
	status, body := a.call(http.MethodPut, "/app_instances/pvc-ex", map[string]any{"admin_state": "online"})
	require.Equal(t, 500, status, "%v", body)
	assert.Contains(t, body["message"], "tgtd is down")
	assert.Equal(t, "offline", data(a.mustOK(http.MethodGet, "/app_instances/pvc-ex", nil))["admin_state"], "a failed export leaves it offline")

	a.mustOK(http.MethodPut, "/app_instances/pvc-ex", map[string]any{"admin_state": "online"})
	spec := ex.exported[iqn]
	assert.Equal(t, []fake.LUNSpec{{VolumeUUID: volUUID, SizeGiB: 2}}, spec.LUNs)
	assert.Equal(t, []string{iqnA}, spec.Initiators)
	assert.False(t, spec.AllowAll)

	a.mustOK(http.MethodPut, acl+"/initiators", map[string]any{"op": "remove", "path": "/initiators/" + iqnA})
	assert.Empty(t, ex.exported[iqn].Initiators)
	ex.failNext = true
	status, _ = a.call(http.MethodPut, acl+"/initiators", map[string]any{"op": "add", "path": "/initiators/" + iqnA})
	assert.Equal(t, 500, status)
	assert.Empty(t, data(a.mustOK(http.MethodGet, acl, nil))["initiators"], "a failed ACL sync is rolled back")

	a.mustOK(http.MethodPut, "/app_instances/pvc-ex/storage_instances/storage-1/volumes/volume-1", map[string]any{"size": 3})
	a.mustOK(http.MethodPut, "/app_instances/pvc-ex", map[string]any{"admin_state": "offline"})
	assert.NotContains(t, ex.exported, iqn)
	a.mustOK(http.MethodDelete, "/app_instances/pvc-ex", nil)
	assert.Equal(t, []string{volUUID}, ex.destroyed)
	assert.Equal(t, []string{"export", "export", "acl ", "acl " + iqnA, "grow", "unexport", "destroy"}, ex.events)
}
