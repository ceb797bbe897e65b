package flex

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/petfabric/petfabric/pkg/flexstate"
)

func TestStateRecords(t *testing.T) {
	s := State{Dir: filepath.Join(t.TempDir(), "state")}
	r, err := s.Load("pv-1")
	require.NoError(t, err)
	assert.Nil(t, r)
	rec := &flexstate.Record{VolumeID: "pv-1", Phase: flexstate.PhaseMounted, IQN: "iqn.2013-05.com.daterainc:tc:01:sn:1", Mounts: []string{"/a"}}
	require.NoError(t, s.Save(rec))
	require.NoError(t, s.Save(&flexstate.Record{VolumeID: "pv-2", Phase: flexstate.PhaseAttaching}))
	require.NoError(t, s.SaveCredentials("pv-1", StoredCredentials{Username: "u", Password: "p"}))
	_, err = lockFile(context.Background(), s.LockPath("pv-1"))
	require.NoError(t, err)
	// Noise the agent and List must ignore.
	require.NoError(t, os.WriteFile(filepath.Join(s.Dir, ".pv-3.json.tmp-123"), []byte("{"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(s.Dir, "README"), nil, 0o644))

	got, err := s.Load("pv-1")
	require.NoError(t, err)
	assert.Equal(t, rec.IQN, got.IQN)
	assert.Equal(t, []string{"/a"}, got.Mounts)
	all, err := s.List()
	require.NoError(t, err)
	require.Len(t, all, 2)
	assert.Equal(t, "pv-1", all[0].VolumeID)

	st, err := os.Stat(s.CredentialsPath("pv-1"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	dst, err := os.Stat(filepath.Dir(s.CredentialsPath("pv-1")))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), dst.Mode().Perm())
	b, err := os.ReadFile(s.RecordPath("pv-1"))
	require.NoError(t, err)
	assert.NotContains(t, string(b), `"p"`, "the record holds no secret")

	require.NoError(t, s.Remove("pv-1"))
	require.NoError(t, s.Remove("pv-1"), "idempotent")
	require.NoError(t, s.RemoveCredentials("pv-1"))
	require.NoError(t, s.RemoveCredentials("pv-1"))
	r, err = s.Load("pv-1")
	require.NoError(t, err)
	assert.Nil(t, r)

	require.NoError(t, os.WriteFile(s.RecordPath("pv-9"), []byte(`{"version":1,"volumeID":"other"}`), 0o644))
	_, err = s.Load("pv-9")
	require.ErrorContains(t, err, "names volume")

	// A newer driver's record is not acted on (a rollback leaves the attachment alone).
	require.NoError(t, os.WriteFile(s.RecordPath("pv-9"), []byte(`{"version":2,"volumeID":"pv-9","phase":"mounted"}`), 0o644))
	_, err = s.Load("pv-9")
	require.ErrorIs(t, err, flexstate.ErrUnknownVersion)
}

func TestLockSerializesOneVolumeOnly(t *testing.T) {
	dir := t.TempDir()
	s := State{Dir: dir}
	ctx := context.Background()
	var inside, maxInside atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			unlock, err := lockFile(ctx, s.LockPath("pv-a"))
			if !assert.NoError(t, err) {
				return
			}
			n := inside.Add(1)
			for {
				m := maxInside.Load()
				if n <= m || maxInside.CompareAndSwap(m, n) {
					break
				}
			}
			time.Sleep(5 * time.Millisecond)
			inside.Add(-1)
			unlock()
		}()
	}
	wg.Wait()
	assert.Equal(t, int32(1), maxInside.Load(), "one holder at a time")

	unlockA, err := lockFile(ctx, s.LockPath("pv-a"))
	require.NoError(t, err)
	defer unlockA()
	unlockB, err := lockFile(ctx, s.LockPath("pv-b"))
	require.NoError(t, err, "another volume is not blocked")
	unlockB()
	tctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel()
	_, err = lockFile(tctx, s.LockPath("pv-a"))
	require.ErrorContains(t, err, "another call for this volume is running")
}

func TestRotatingWriterAcrossProcesses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log", "flex.log")
	// Two writers on one path stand for two driver processes.
	w1, err := OpenRotating(path, 2000, 3)
	require.NoError(t, err)
	w2, err := OpenRotating(path, 2000, 3)
	require.NoError(t, err)
	var wg sync.WaitGroup
	for i, w := range []*RotatingWriter{w1, w2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 100 {
				_, err := fmt.Fprintf(w, "writer %d line %03d %s\n", i, j, strings.Repeat("x", 40))
				assert.NoError(t, err)
			}
		}()
	}
	wg.Wait()
	require.NoError(t, w1.Close())
	require.NoError(t, w2.Close())
	files, _ := filepath.Glob(path + "*")
	var logs []string
	for _, f := range files {
		if !strings.HasSuffix(f, ".lock") {
			logs = append(logs, f)
		}
	}
	assert.LessOrEqual(t, len(logs), 4, "current file plus at most 3 backups: %v", logs)
	for _, f := range logs {
		st, err := os.Stat(f)
		require.NoError(t, err)
		assert.LessOrEqual(t, st.Size(), int64(2000+100), f)
		b, _ := os.ReadFile(f)
		for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
			assert.True(t, strings.HasPrefix(line, "writer ") && strings.HasSuffix(line, "x"), "whole lines only: %q", line)
		}
	}
	cur, _ := os.ReadFile(path)
	assert.NotEmpty(t, cur)
}
