package flex

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/petfabric/petfabric/pkg/datera"
	"github.com/petfabric/petfabric/pkg/pvoptions"

	"github.com/petfabric/petfabric/pkg/flexstate"
)

// The per-mount credential check. kubelet hands the driver a volumeID and the secretRef values
// of whatever volume a pod names, and nothing stops a pod in another namespace from naming the
// volumeID of a volume that is already attached on its node. So every mount, attached or not,
// proves with the credentials it was given that they can see the volume's app_instance on
// Datera; a volume attached here is only bind-mounted into a pod whose credentials pass.
//
// The proof costs a login and one GET per mount. A positive answer is cached per (endpoint,
// tenant, username, password, volumeID) for AccessCheckCacheTTL (default 30s, at most 5m), so a
// burst of pods on one node sharing a volume costs one round trip. What the cache can get wrong
// is bounded by the TTL: a password changed or a user removed on Datera keeps working for new
// pods on a node where the same credentials proved access to the same volume less than a TTL
// ago. 30s is below kubelet's mount retry backoff after the first few failures, so a revoked
// credential stops working about as fast as a retrying pod would notice; 5m caps the exposure an
// admin can configure.
//
// Each driver call is a new process, so the cache lives in the state directory: one file per
// entry, named by an HMAC-SHA256 of the tuple under a random key that never leaves this node
// (access-cache/key, 0600 in a 0700 directory, root only). Neither the password nor a plain hash
// of it (which could be brute-forced offline) is ever written; without the key a file name
// reveals nothing, and only root, who can read the key, could forge an entry.

const (
	accessCacheDir = "access-cache"
	accessKeyFile  = "key"
	accessKeyBytes = 32
)

type accessCache struct {
	dir string
	ttl time.Duration
	now func() time.Time
}

func (d *Driver) accessCache() accessCache {
	return accessCache{dir: filepath.Join(d.Config.StateDir, accessCacheDir), ttl: d.Config.accessCacheTTL(), now: time.Now}
}

// entry names the cache file of one (credentials, volume) tuple.
func (c accessCache) entry(p DateraParams, volumeID string) (string, error) {
	if c.ttl <= 0 {
		return "", nil
	}
	key, err := c.key()
	if err != nil {
		return "", err
	}
	mac := hmac.New(sha256.New, key)
	for _, f := range []string{p.Endpoint, p.Tenant, p.Username, p.Password, volumeID} {
		// Length-prefixed, so no two tuples share an encoding.
		_ = binary.Write(mac, binary.BigEndian, uint32(len(f)))
		mac.Write([]byte(f))
	}
	return hex.EncodeToString(mac.Sum(nil)), nil
}

// key returns the node's cache key, creating it on first use. Concurrent first uses agree on
// one key: each writes a temp file and links it into place, which fails for all but the first.
func (c accessCache) key() ([]byte, error) {
	path := filepath.Join(c.dir, accessKeyFile)
	b, err := os.ReadFile(path)
	if err == nil && len(b) == accessKeyBytes {
		return b, nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("access cache key: %w", err)
	}
	if err := os.MkdirAll(c.dir, 0o700); err != nil {
		return nil, fmt.Errorf("access cache: %w", err)
	}
	if err := os.Chmod(c.dir, 0o700); err != nil {
		return nil, fmt.Errorf("access cache: %w", err)
	}
	if err == nil { // wrong length: replace it (invalidates every entry, which is safe)
		_ = os.Remove(path)
	}
	key := make([]byte, accessKeyBytes)
	_, _ = rand.Read(key) // crypto/rand.Read never fails (Go 1.24+)
	f, err := os.CreateTemp(c.dir, ".key-*")
	if err != nil {
		return nil, fmt.Errorf("access cache key: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	_, werr := f.Write(key)
	if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
		return nil, fmt.Errorf("access cache key: %w", err)
	}
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return c.key() // another call won the race: use its key
		}
		return nil, fmt.Errorf("access cache key: %w", err)
	}
	return key, nil
}

// hit reports whether the entry was proven less than the TTL ago. A time in the future (the
// clock went back) is no hit.
func (c accessCache) hit(name string) bool {
	if c.ttl <= 0 || name == "" {
		return false
	}
	b, err := os.ReadFile(filepath.Join(c.dir, name))
	if err != nil {
		return false
	}
	at, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(string(b)))
	if err != nil {
		return false
	}
	age := c.now().Sub(at)
	return age >= 0 && age < c.ttl
}

// store records a positive answer now and drops expired entries.
func (c accessCache) store(name string) error {
	if c.ttl <= 0 || name == "" {
		return nil
	}
	// Atomic for readers (temp file and rename), but not synced: an entry lost in a crash only
	// costs one more check, and an fsync would cost more than the check it saves.
	if err := os.MkdirAll(c.dir, 0o700); err != nil {
		return fmt.Errorf("access cache: %w", err)
	}
	f, err := os.CreateTemp(c.dir, ".entry-*")
	if err != nil {
		return fmt.Errorf("access cache: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	_, werr := f.WriteString(c.now().UTC().Format(time.RFC3339Nano))
	if err := errors.Join(werr, f.Close()); err != nil {
		return fmt.Errorf("access cache: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(c.dir, name)); err != nil {
		return fmt.Errorf("access cache: %w", err)
	}
	entries, err := os.ReadDir(c.dir)
	if err != nil {
		return nil //nolint:nilerr // pruning is best effort
	}
	for _, e := range entries {
		if e.Name() == accessKeyFile || e.Name() == name || strings.HasPrefix(e.Name(), ".") || !e.Type().IsRegular() {
			continue
		}
		if info, err := e.Info(); err == nil && c.now().Sub(info.ModTime()) > MaxAccessCheckCacheTTL {
			_ = os.Remove(filepath.Join(c.dir, e.Name()))
		}
	}
	return nil
}

// forget drops an entry (after a failed check).
func (c accessCache) forget(name string) {
	if name != "" {
		_ = os.Remove(filepath.Join(c.dir, name))
	}
}

// verifyAccess proves that the mount's credentials can see the volume's app_instance, and when
// the volume is attached here (rec), that it may still be given to a new pod (stillAttachable).
// A cache hit skips both for at most the TTL.
// allowMissing lets a missing app_instance pass (nothing to protect yet; not cached).
func (d *Driver) verifyAccess(ctx context.Context, log *slog.Logger, req *MountRequest, creds *credentials, rec *flexstate.Record, allowMissing bool) error {
	if d.accessCheckOff {
		return nil
	}
	p := DateraParams{Endpoint: req.Endpoint, Tenant: req.Tenant, Username: creds.Username, Password: creds.Password}
	cache := d.accessCache()
	name, err := cache.entry(p, req.VolumeID)
	if err != nil {
		log.WarnContext(ctx, "access cache unavailable; checking with Datera", "error", err)
	}
	if cache.hit(name) {
		log.DebugContext(ctx, "credential check: proven recently (cached)")
		return nil
	}
	api, err := d.NewDatera(p)
	if err != nil {
		return err
	}
	ai, err := api.GetAppInstance(ctx, req.VolumeID)
	if allowMissing && errors.Is(err, datera.ErrNotFound) {
		return nil
	}
	if err != nil {
		cache.forget(name)
		return accessError(req, creds, err)
	}
	if rec != nil {
		if err := stillAttachable(ai, rec); err != nil {
			return err
		}
	}
	if err := cache.store(name); err != nil {
		log.WarnContext(ctx, "cannot cache the credential check", "error", err)
	}
	log.DebugContext(ctx, "credential check: the credentials can access the volume", "username", creds.Username)
	return nil
}

// stillAttachable checks, on the app_instance just read, that the volume attached on this node
// is still the one on Datera (same target) and, for ReadWriteOnce, that this node was not
// fenced: once petfabric's reconcile loop has removed a node's initiator from the ACL, another
// node may be writing the volume, so no new pod on this node gets it. The pods still using it
// here keep their mounts (the driver does not pull a filesystem from under a running pod);
// they are the ones the loop judged gone.
func stillAttachable(ai *datera.AppInstance, rec *flexstate.Record) error {
	si, _, ok := ai.Volume()
	if !ok {
		return nil
	}
	if rec.IQN != "" && si.Access.IQN != "" && si.Access.IQN != rec.IQN {
		return fmt.Errorf("volume %s on Datera now has target %s, not %s as attached on this node: it was deleted and created again; "+
			"it is mounted into no new pod until every pod using the old one is gone", rec.VolumeID, si.Access.IQN, rec.IQN)
	}
	if rec.AccessMode != pvoptions.AccessReadOnlyMany && rec.InitiatorName != "" && !si.ACLPolicy.HasInitiator(rec.InitiatorName) {
		return fmt.Errorf("volume %s is ReadWriteOnce and this node's initiator %s is no longer in its ACL (fenced by petfabric's "+
			"reconcile loop, or removed by hand): another node may be using it, so it is mounted into no new pod here; "+
			"once the pods using it on this node are gone it can be attached again", rec.VolumeID, rec.InitiatorName)
	}
	return nil
}

// rememberAccess caches a positive answer obtained on the attach path (the credentials found or
// created the app_instance).
func (d *Driver) rememberAccess(ctx context.Context, log *slog.Logger, p DateraParams, volumeID string) {
	cache := d.accessCache()
	name, err := cache.entry(p, volumeID)
	if err == nil {
		err = cache.store(name)
	}
	if err != nil {
		log.WarnContext(ctx, "cannot cache the credential check", "error", err)
	}
}

func accessError(req *MountRequest, creds *credentials, err error) error {
	who := fmt.Sprintf("the Datera credentials supplied for this mount (user %q from the %s, tenant %s)",
		creds.Username, creds.Source, datera.NormalizeTenant(req.Tenant))
	if errors.Is(err, datera.ErrAuth) || errors.Is(err, datera.ErrNotFound) {
		return fmt.Errorf("%s cannot access volume %s: %w", who, req.VolumeID, err)
	}
	return fmt.Errorf("could not confirm that %s can access volume %s: %w", who, req.VolumeID, err)
}
