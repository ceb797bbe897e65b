package flex

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/petfabric/petfabric/pkg/flexstate"
)

// The state record (its type, version, file naming and the agent's reading of it) is
// pkg/flexstate's; State is the driver's handling of the directory: locks, atomic writes,
// stored credentials.

// StoredCredentials are what unmount needs to log in to Datera again (kubelet passes no
// secret to unmount). Saved 0600 under <state>/credentials/, removed with the record.
type StoredCredentials struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// State is the driver's state directory.
type State struct{ Dir string }

// RecordPath is <dir>/<volumeID>.json (flexstate.FileName).
func (s State) RecordPath(id string) string { return filepath.Join(s.Dir, flexstate.FileName(id)) }

// LockPath is <dir>/locks/<volumeID>.lock (never removed: removing lock files races).
func (s State) LockPath(id string) string { return filepath.Join(s.Dir, "locks", id+".lock") }

// CredentialsPath is <dir>/credentials/<volumeID>.json.
func (s State) CredentialsPath(id string) string {
	return filepath.Join(s.Dir, "credentials", id+".json")
}

// Load reads a record; a missing one is (nil, nil). A record of a version this build does not
// read is an error that says so (flexstate.ErrUnknownVersion): the driver does not act on an
// attachment it does not understand.
func (s State) Load(id string) (*flexstate.Record, error) {
	b, err := os.ReadFile(s.RecordPath(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading volume record: %w", err)
	}
	r, err := flexstate.Decode(b)
	if err != nil {
		return nil, fmt.Errorf("volume record %s: %w", s.RecordPath(id), err)
	}
	if r.VolumeID != id {
		return nil, fmt.Errorf("volume record %s names volume %q", s.RecordPath(id), r.VolumeID)
	}
	return r, nil
}

// Save writes a record atomically (temp file + fsync + rename + directory fsync).
func (s State) Save(r *flexstate.Record) error {
	r.UpdatedAt = time.Now().UTC()
	b, err := flexstate.Encode(r)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(s.RecordPath(r.VolumeID), b, 0o644); err != nil {
		return fmt.Errorf("saving volume record: %w", err)
	}
	return nil
}

// Remove deletes a record; a missing one is success.
func (s State) Remove(id string) error {
	if err := os.Remove(s.RecordPath(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing volume record: %w", err)
	}
	return syncDir(s.Dir)
}

// List reads every record of the state directory.
func (s State) List() ([]*flexstate.Record, error) {
	entries, err := os.ReadDir(s.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing volume records: %w", err)
	}
	var out []*flexstate.Record
	for _, e := range entries {
		id, ok := flexstate.VolumeIDOf(e.Name())
		if !ok || !e.Type().IsRegular() {
			continue
		}
		r, err := s.Load(id)
		if err != nil {
			return nil, err
		}
		if r != nil {
			out = append(out, r)
		}
	}
	return out, nil
}

// SaveCredentials stores the Datera login for a later unmount (0600 in a 0700 directory).
func (s State) SaveCredentials(id string, c StoredCredentials) error {
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(s.CredentialsPath(id), b, 0o600); err != nil {
		return fmt.Errorf("saving credentials for unmount: %w", err)
	}
	return nil
}

// LoadCredentials reads stored credentials; missing is (nil, nil).
func (s State) LoadCredentials(id string) (*StoredCredentials, error) {
	b, err := os.ReadFile(s.CredentialsPath(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading stored credentials: %w", err)
	}
	var c StoredCredentials
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("stored credentials of %s are corrupt", id)
	}
	return &c, nil
}

// RemoveCredentials deletes stored credentials; missing is success.
func (s State) RemoveCredentials(id string) error {
	if err := os.Remove(s.CredentialsPath(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing stored credentials: %w", err)
	}
	return nil
}

// writeFileAtomic replaces path with data: a hidden temp file in the same directory (the agent
// ignores it: it starts with "." and does not end in .json), fsync, rename, fsync the directory.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	dirPerm := os.FileMode(0o755)
	if perm&0o077 == 0 {
		dirPerm = 0o700
	}
	if err := os.MkdirAll(dir, dirPerm); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
