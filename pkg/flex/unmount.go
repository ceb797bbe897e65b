package flex

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"slices"
	"time"

	"k8s.io/mount-utils"

	"github.com/petfabric/petfabric/pkg/datera"
	"github.com/petfabric/petfabric/pkg/iscsi"

	"github.com/petfabric/petfabric/pkg/flexstate"
)

// Unmount removes the bind mount at dir and, when no other mount of the volume remains on the
// node, detaches it: unmount the global path, log out (devices deleted first), remove this
// node from the ACL, delete the record. Already-gone pieces are skipped, so it is idempotent and
// a retry after a crash at any point converges.
func (d *Driver) Unmount(ctx context.Context, dir string) error {
	if err := ValidateMountDir(dir); err != nil {
		return err
	}
	log := d.Log.With("dir", dir)
	rec, err := d.findByDir(dir)
	if err != nil {
		return err
	}
	if rec == nil {
		return d.cleanupUnknown(ctx, log, dir)
	}
	log = log.With("volumeID", rec.VolumeID)
	unlock, err := d.lock(ctx, rec.VolumeID)
	if err != nil {
		return err
	}
	defer unlock()
	if rec, err = d.State.Load(rec.VolumeID); err != nil {
		return err
	}
	if rec == nil { // detached meanwhile by another call
		return d.cleanupUnknown(ctx, log, dir)
	}

	table, err := readMountTable()
	if err != nil {
		return err
	}
	if table.find(dir) != nil {
		if err := d.Mounter.Unmount(dir); err != nil {
			return fmt.Errorf("unmounting %s: %w", dir, err)
		}
		d.crash(StepUnmountBind)
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		log.WarnContext(ctx, "cannot remove the pod volume directory", "error", err)
	}
	users, err := d.users(rec)
	if err != nil {
		return err
	}
	if len(users) > 0 {
		if rec.RemoveMount(dir) {
			if err := d.State.Save(rec); err != nil {
				return err
			}
		}
		d.crash(StepMetadataUpdate)
		log.InfoContext(ctx, "volume still used on this node; staying attached", "mounts", users)
		return nil
	}
	// The last user: the record keeps listing dir until the volume is fully detached, so that a
	// retry of this unmount after a crash finds the volume again.
	d.crash(StepMetadataUpdate)
	return d.detach(ctx, log, rec)
}

// findByDir finds the record of the volume mounted at dir: the one listing dir, else the one
// whose global mount is the same filesystem as dir.
func (d *Driver) findByDir(dir string) (*flexstate.Record, error) {
	recs, err := d.State.List()
	if err != nil {
		return nil, err
	}
	for _, r := range recs {
		if slices.Contains(r.Mounts, dir) {
			return r, nil
		}
	}
	table, err := readMountTable()
	if err != nil {
		return nil, err
	}
	m := table.find(dir)
	if m == nil {
		return nil, nil
	}
	for _, r := range recs {
		if g := table.find(r.GlobalMountPath); g != nil && g.Major == m.Major && g.Minor == m.Minor {
			return r, nil
		}
	}
	return nil, nil
}

// cleanupUnknown handles a directory no record knows: unmount it if mounted (kubelet's own
// default for unmount) and remove it.
func (d *Driver) cleanupUnknown(ctx context.Context, log *slog.Logger, dir string) error {
	table, err := readMountTable()
	if err != nil {
		return err
	}
	if table.find(dir) != nil {
		log.WarnContext(ctx, "no volume record for this mount; unmounting it only")
		if err := d.Mounter.Unmount(dir); err != nil {
			return fmt.Errorf("unmounting %s: %w", dir, err)
		}
	} else {
		log.InfoContext(ctx, "nothing mounted and no volume record: already unmounted")
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		log.WarnContext(ctx, "cannot remove the pod volume directory", "error", err)
	}
	return nil
}

// users lists the mounts on this node that still use the volume, other than its global mount.
func (d *Driver) users(rec *flexstate.Record) ([]string, error) {
	table, err := readMountTable()
	if err != nil {
		return nil, err
	}
	if g := table.find(rec.GlobalMountPath); g != nil {
		return table.sameFS(g, rec.GlobalMountPath), nil
	}
	var out []string
	for _, m := range rec.Mounts {
		if table.find(m) != nil {
			out = append(out, m)
		}
	}
	if rec.Device != "" && deviceStillOurs(rec) {
		for i := range table {
			if same, err := isDevice(&table[i], rec.Device); err == nil && same && !slices.Contains(out, table[i].MountPoint) {
				out = append(out, table[i].MountPoint)
			}
		}
	}
	return out, nil
}

// deviceStillOurs reports whether rec.Device still is this volume's device. Device names are
// reused: once the session is gone (a node that died and came back, a logout), /dev/sdX or
// /dev/loopN may belong to another volume, whose mounts must not keep this record alive. The
// by-path links name the target and LUN, so while one of them resolves the session, and the
// device, are this volume's. Records without links (none were found) keep the device check.
func deviceStillOurs(rec *flexstate.Record) bool {
	if len(rec.DevicePaths) == 0 {
		return true
	}
	for _, p := range rec.DevicePaths {
		if _, err := os.Stat(p); err == nil {
			return true
		}
	}
	return false
}

// releaseIfUnused detaches the volume unless another mount on the node still uses it.
func (d *Driver) releaseIfUnused(ctx context.Context, log *slog.Logger, rec *flexstate.Record) error {
	users, err := d.users(rec)
	if err != nil {
		return err
	}
	if len(users) > 0 {
		log.InfoContext(ctx, "volume still used on this node; staying attached", "mounts", users)
		return nil
	}
	return d.detach(ctx, log, rec)
}

// detach undoes everything attach did, in reverse, skipping what is already gone.
func (d *Driver) detach(ctx context.Context, log *slog.Logger, rec *flexstate.Record) error {
	if rec.Phase != flexstate.PhaseDetached {
		table, err := readMountTable()
		if err != nil {
			return err
		}
		if rec.GlobalMountPath != "" && table.find(rec.GlobalMountPath) != nil {
			if err := d.unmountGlobal(ctx, log, rec.GlobalMountPath); err != nil {
				return fmt.Errorf("unmounting the global mount %s: %w", rec.GlobalMountPath, err)
			}
			d.crash(StepUnmountGlobal)
		}
		if rec.GlobalMountPath != "" {
			if err := os.Remove(rec.GlobalMountPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
				log.WarnContext(ctx, "cannot remove the global mount point", "error", err)
			}
		}
		if rec.IQN != "" {
			if err := d.Initiator.Logout(ctx, iscsi.LogoutRequest{IQN: rec.IQN, Portals: rec.Portals, LUN: rec.LUN}); err != nil {
				return fmt.Errorf("logging out of %s: %w", rec.IQN, err)
			}
			d.crash(StepLogout)
		}
		if rec.StorageInstance != "" && rec.InitiatorName != "" {
			if err := d.aclRemove(ctx, log, rec); err != nil {
				return err
			}
			d.crash(StepACLRemove)
		}
		rec.Phase = flexstate.PhaseDetached
		if err := d.State.Save(rec); err != nil {
			return err
		}
	}
	if err := d.forget(log, rec); err != nil {
		return err
	}
	log.InfoContext(ctx, "volume detached from this node", "iqn", rec.IQN)
	return nil
}

// unmountGlobal unmounts a volume's global mount without letting a dead iSCSI session hang the
// call: the filesystem's unmount flushes to the device, and with the session gone the kernel
// waits for the session's replacement timeout, or for ever. k8s.io/mount-utils' UnmountWithForce
// gives the plain unmount ForceUnmountAfter, then runs umount -f. The forced attempt can block
// too, so the call waits at most twice ForceUnmountAfter (and never past its own deadline), then
// fails: the record stays, kubelet retries the unmount, and the umount left running finishes or
// not without holding up kubelet. Data not yet written when a forced unmount succeeds could not
// have reached the dead device anyway.
func (d *Driver) unmountGlobal(ctx context.Context, log *slog.Logger, path string) error {
	after := d.Config.ForceUnmountAfter.or(30 * time.Second)
	done := make(chan error, 1)
	go func() {
		if f, ok := d.Mounter.(mount.MounterForceUnmounter); ok {
			done <- f.UnmountWithForce(path, after)
			return
		}
		done <- d.Mounter.Unmount(path)
	}()
	limit := time.NewTimer(2 * after)
	defer limit.Stop()
	select {
	case err := <-done:
		return err
	case <-limit.C:
	case <-ctx.Done():
	}
	log.ErrorContext(ctx, "unmount of the global mount hangs (dead iSCSI session?); giving up for this call", "path", path, "forceAfter", after)
	return fmt.Errorf("the unmount of %s did not finish within %s (a forced unmount is tried after %s); "+
		"the device may be unreachable, the next unmount retries", path, 2*after, after)
}

func (d *Driver) aclRemove(ctx context.Context, log *slog.Logger, rec *flexstate.Record) error {
	creds, err := d.unmountCredentials(rec.VolumeID)
	if err != nil {
		return err
	}
	api, err := d.NewDatera(DateraParams{Endpoint: rec.Endpoint, Tenant: rec.Tenant, Username: creds.Username, Password: creds.Password})
	if err != nil {
		return err
	}
	err = api.RemoveInitiatorFromACL(ctx, rec.VolumeID, rec.StorageInstance, rec.InitiatorName)
	if errors.Is(err, datera.ErrNotFound) {
		log.InfoContext(ctx, "the Datera volume no longer exists; nothing to revoke", "error", err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("removing this node from the volume's ACL: %w", err)
	}
	return nil
}

// forget removes the local state of a detached volume: stored credentials, then the record.
func (d *Driver) forget(_ *slog.Logger, rec *flexstate.Record) error {
	if err := d.State.RemoveCredentials(rec.VolumeID); err != nil {
		return err
	}
	d.crash(StepMetadataRemove)
	return d.State.Remove(rec.VolumeID)
}
