package flex

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/mount-utils"

	"github.com/petfabric/petfabric/pkg/datera"
	"github.com/petfabric/petfabric/pkg/iscsi"
	"github.com/petfabric/petfabric/pkg/pvoptions"

	"github.com/petfabric/petfabric/pkg/flexstate"
)

// errNoRollback marks failures after which the driver must not tear anything down (the state
// is not one it created).
var errNoRollback = errors.New("left as found")

// Mount attaches the volume to this node if needed and bind-mounts it into req.Dir:
//
//	backstore allowed? → lock(volume) → record "attaching" → Datera: create on first use (or
//	find), owner check, register the initiator, RWO fence check, ACL add, RWO fence verify,
//	online, wait available → login on every portal → wait for the by-path device → probe:
//	format only if verifiably blank → mount at the global path → bind into req.Dir → record
//	"mounted".
//
// Every step is idempotent and skipped when already done, so a retry after a crash at any
// point converges. When the volume is already mounted at its global path, the mount's
// credentials must still prove they can see the volume (access.go) and the owner and access
// mode must match the attachment's; then only the bind runs. A failure rolls the attachment back
// when no other pod on the node uses it; a refusal of a mount into an attached volume never
// touches the attachment.
func (d *Driver) Mount(ctx context.Context, req *MountRequest) (err error) {
	log := d.Log.With("volumeID", req.VolumeID, "dir", req.Dir)
	if len(req.Ignored) > 0 {
		log.WarnContext(ctx, "ignoring unknown options", "keys", req.Ignored)
	}
	for _, own := range []string{d.Config.StateDir, d.Config.GlobalMountDir} {
		if within(req.Dir, own) {
			return fmt.Errorf("mount directory %s lies inside the driver's own directory %s", req.Dir, own)
		}
	}
	if err := d.Config.checkBackstore(req.BackstoreServer, req.Endpoint); err != nil {
		return err
	}
	if req.AskedRW {
		log.WarnContext(ctx, "the volume is ReadOnlyMany: mounting it read-only although read-write was asked")
	}
	creds, err := d.mountCredentials(req)
	if err != nil {
		return err
	}
	initiator, err := d.initiatorName()
	if err != nil {
		return err
	}
	unlock, err := d.lock(ctx, req.VolumeID)
	if err != nil {
		return err
	}
	defer unlock()

	rec, err := d.State.Load(req.VolumeID)
	if err != nil {
		return err
	}
	if rec != nil && rec.Phase == flexstate.PhaseDetached {
		// An unmount died after detaching: finish its local cleanup first.
		if err := d.forget(log, rec); err != nil {
			return err
		}
		rec = nil
	}
	if rec != nil && (rec.Endpoint != req.Endpoint || rec.Tenant != req.Tenant) {
		return fmt.Errorf("volume %s is attached on this node from %s (tenant %q); this mount names %s (tenant %q)",
			req.VolumeID, rec.Endpoint, rec.Tenant, req.Endpoint, req.Tenant)
	}
	attached, err := d.attachedHere(rec)
	if err != nil {
		return err
	}
	switch {
	case attached:
		// Checks of a mount into an attachment that other pods may use: a refusal leaves the
		// attachment exactly as it was (no rollback).
		if err := d.checkAttached(ctx, log, req, rec, creds); err != nil {
			return err
		}
	case rec != nil:
		// A half-done attachment (an earlier mount was interrupted): the credentials must pass
		// before this call may finish it, or roll it back, with them. If it was interrupted
		// before the app_instance was created, a missing one is what the attach creates.
		if err := d.verifyAccess(ctx, log, req, creds, nil, rec.StorageInstance == ""); err != nil {
			return err
		}
	}
	defer func() {
		if err != nil && rec != nil && !errors.Is(err, errNoRollback) {
			d.rollback(ctx, log, rec, req.Dir)
		}
	}()

	if attached {
		log.InfoContext(ctx, "volume already attached on this node", "device", rec.Device)
		if rec.ReadOnly && !req.ReadOnly {
			return fmt.Errorf("volume %s is attached read-only on this node; it cannot be mounted read-write until every pod using it is gone: %w", req.VolumeID, errNoRollback)
		}
	} else {
		if rec == nil {
			rec = &flexstate.Record{VolumeID: req.VolumeID}
		}
		if err := d.attach(ctx, log, req, rec, creds, initiator); err != nil {
			return err
		}
	}
	return d.bind(ctx, log, req, rec)
}

// checkAttached decides whether a mount may share the volume attached on this node: the same
// access mode, the same owner (when both name one), and credentials that can see the volume.
func (d *Driver) checkAttached(ctx context.Context, log *slog.Logger, req *MountRequest, rec *flexstate.Record, creds *credentials) error {
	if mode := rec.AccessMode; mode != "" && mode != req.AccessMode {
		return fmt.Errorf("volume %s is attached on this node as %s; this mount asks for %s", req.VolumeID, mode, req.AccessMode)
	}
	if rec.Owner != nil && req.HasOwner {
		if err := pvoptions.CheckSameOwner(req.VolumeID, *rec.Owner, req.Owner); err != nil {
			return err
		}
	}
	return d.verifyAccess(ctx, log, req, creds, rec, false)
}

func (d *Driver) lock(ctx context.Context, id string) (func(), error) {
	lctx, cancel := context.WithTimeout(ctx, d.Config.LockTimeout.or(4*time.Minute))
	defer cancel()
	return lockFile(lctx, d.State.LockPath(id))
}

// attachedHere reports whether the record's device is mounted at its global path.
func (d *Driver) attachedHere(rec *flexstate.Record) (bool, error) {
	if rec == nil || rec.Device == "" || rec.GlobalMountPath == "" {
		return false, nil
	}
	table, err := readMountTable()
	if err != nil {
		return false, err
	}
	g := table.find(rec.GlobalMountPath)
	if g == nil {
		return false, nil
	}
	same, err := isDevice(g, rec.Device)
	if err != nil || !same {
		return false, nil //nolint:nilerr // a vanished device means "not attached": attach again
	}
	return true, nil
}

func (d *Driver) attach(ctx context.Context, log *slog.Logger, req *MountRequest, rec *flexstate.Record, creds *credentials, initiator string) error {
	start := time.Now()
	rec.Phase = flexstate.PhaseAttaching
	rec.BackstoreServer, rec.Endpoint, rec.Tenant = req.BackstoreServer, req.Endpoint, req.Tenant
	rec.GlobalMountPath = d.globalPath(req.VolumeID)
	rec.FSType, rec.ReadOnly, rec.InitiatorName = req.FSType, req.ReadOnly, initiator
	rec.AccessMode, rec.Owner = req.AccessMode, nil
	if req.HasOwner {
		owner := req.Owner
		rec.Owner = &owner
	}
	if err := d.State.SaveCredentials(req.VolumeID, StoredCredentials{Username: creds.Username, Password: creds.Password}); err != nil {
		return err
	}
	if err := d.State.Save(rec); err != nil {
		return err
	}
	d.crash(StepMetadataIntent)

	if err := d.dateraAttach(ctx, log, req, rec, creds, initiator); err != nil {
		return err
	}
	dateraDone := time.Now()

	res, err := d.Initiator.Login(ctx, iscsi.LoginRequest{IQN: rec.IQN, Portals: rec.Portals, LUN: rec.LUN, CHAP: creds.CHAP})
	if err != nil {
		return err
	}
	for p, perr := range res.Failed {
		log.WarnContext(ctx, "portal login failed; continuing on the others", "portal", p, "error", perr)
	}
	if err := d.adoptLUN(log, &rec.LUN, res.LUN, func() error { return d.State.Save(rec) }); err != nil {
		return err
	}
	d.crash(StepLogin)
	loginDone := time.Now()

	links := make([]string, 0, len(res.LoggedIn))
	for _, p := range res.LoggedIn {
		links = append(links, d.Devices.ByPathLink(p, rec.IQN, rec.LUN))
	}
	found, err := iscsi.WaitForLinks(ctx, links, iscsi.WaitOptions{Timeout: d.Config.DeviceWaitTimeout.or(30 * time.Second)})
	if err != nil {
		return fmt.Errorf("waiting for the volume's device: %w", err)
	}
	dev, err := iscsi.ResolveBlockDevice(found[0])
	if err != nil {
		return err
	}
	if d.Multipath {
		wait := d.MultipathWait
		if wait <= 0 {
			wait = 10 * time.Second
		}
		if dm, err := d.Devices.WaitMultipath(ctx, dev, wait); err != nil {
			return fmt.Errorf("waiting for the multipath device: %w", err)
		} else if dm != "" {
			dev = dm
		}
	}
	rec.Device, rec.DevicePaths = dev, found
	d.crash(StepDeviceWait)
	deviceDone := time.Now()

	if err := d.mountGlobal(ctx, log, req, rec); err != nil {
		return err
	}
	if err := d.State.Save(rec); err != nil {
		return err
	}
	log.InfoContext(ctx, "volume attached", "device", dev, "paths", found, "fsType", rec.FSType,
		"datera", dateraDone.Sub(start), "login", loginDone.Sub(dateraDone),
		"deviceWait", deviceDone.Sub(loginDone), "formatAndMount", time.Since(deviceDone))
	return nil
}

// dateraAttach creates the volume on first use (a ReadWriteOnce one; a ReadOnlyMany volume is
// only ever found), checks the owner, grants this node (behind the RWO fence), onlines it and
// reads the target. It fills rec.StorageInstance (saved before the ACL changes), rec.IQN and
// rec.Portals.
func (d *Driver) dateraAttach(ctx context.Context, log *slog.Logger, req *MountRequest, rec *flexstate.Record, creds *credentials, initiator string) error {
	params := DateraParams{Endpoint: req.Endpoint, Tenant: req.Tenant, Username: creds.Username, Password: creds.Password}
	api, err := d.NewDatera(params)
	if err != nil {
		return err
	}
	rwo := req.AccessMode != pvoptions.AccessReadOnlyMany
	var ai *datera.AppInstance
	if rwo {
		ai, err = api.CreateAppInstance(ctx, req.Volume)
		if err != nil {
			err = fmt.Errorf("creating or finding the Datera volume: %w", err)
		}
	} else {
		ai, err = api.GetAppInstance(ctx, req.VolumeID)
		if errors.Is(err, datera.ErrNotFound) {
			return fmt.Errorf("volume %s is ReadOnlyMany and does not exist on Datera: a ReadOnlyMany volume is never created by the driver "+
				"(it would be blank, and a blank volume cannot be formatted read-only): %w", req.VolumeID, err)
		}
		if err != nil {
			err = accessError(req, creds, err)
		}
	}
	if err != nil {
		return err
	}
	// These credentials just found or created the app_instance: the per-mount check passed.
	d.rememberAccess(ctx, log, params, req.VolumeID)
	d.crash(StepDateraCreate)
	si, _, ok := ai.Volume()
	if !ok {
		return fmt.Errorf("the Datera volume %s has no storage instance with a volume", req.VolumeID)
	}
	if err := d.checkOwner(ctx, log, api, req); err != nil {
		return err
	}
	if (req.MaxIOPS > 0 || req.MaxBWKiB > 0) && req.Volume.Template == "" && rwo {
		if _, err := api.SetPerformancePolicy(ctx, req.VolumeID, datera.PerformancePolicy{TotalIOPSMax: req.MaxIOPS, TotalBandwidthMax: req.MaxBWKiB}); err != nil {
			return fmt.Errorf("setting the performance policy: %w", err)
		}
	}
	if _, err := api.RegisterInitiator(ctx, initiator, initiatorLabel(d.Config.NodeName), true); err != nil {
		return fmt.Errorf("registering this node's initiator: %w", err)
	}
	willAdd := false
	if rwo {
		if willAdd, err = fenceCheck(ctx, api, req.VolumeID, si.Name, initiator); err != nil {
			return err
		}
	}
	rec.StorageInstance = si.Name
	if err := d.State.Save(rec); err != nil {
		return err
	}
	if err := api.AddInitiatorToACL(ctx, req.VolumeID, si.Name, initiator); err != nil {
		return fmt.Errorf("granting this node access: %w", err)
	}
	d.crash(StepACLAdd)
	if rwo {
		if err := d.fenceVerify(ctx, log, api, req.VolumeID, si.Name, initiator, willAdd); err != nil {
			return err
		}
	}
	if ai.AdminState != datera.Online {
		if _, err := api.SetAdminState(ctx, req.VolumeID, datera.Online, false); err != nil {
			return fmt.Errorf("bringing the volume online: %w", err)
		}
		d.crash(StepOnline)
	}
	wctx, cancel := context.WithTimeout(ctx, d.Config.AvailableTimeout.or(2*time.Minute))
	defer cancel()
	ai, err = api.WaitAvailable(wctx, req.VolumeID)
	if err != nil {
		return fmt.Errorf("waiting for the volume to become available: %w", err)
	}
	si, _, _ = ai.Volume()
	if err := iscsi.ValidateIQN(si.Access.IQN); err != nil {
		return fmt.Errorf("the Datera target name is invalid: %w", err)
	}
	rec.IQN = si.Access.IQN
	rec.Portals = rec.Portals[:0]
	for _, p := range si.Access.Portals() {
		norm, err := iscsi.ParsePortal(p)
		if err != nil {
			return fmt.Errorf("the Datera portal is invalid: %w", err)
		}
		rec.Portals = append(rec.Portals, norm)
	}
	if len(rec.Portals) == 0 {
		return fmt.Errorf("no portal reported by Datera for %s", req.VolumeID)
	}
	rec.LUN = 0 // Datera: one target per volume, LUN 0
	log.InfoContext(ctx, "volume available on Datera", "iqn", rec.IQN, "portals", rec.Portals, "storageInstance", rec.StorageInstance)
	return d.State.Save(rec)
}

// mountGlobal formats the device if it is verifiably blank and mounts it at the global path.
func (d *Driver) mountGlobal(ctx context.Context, log *slog.Logger, req *MountRequest, rec *flexstate.Record) error {
	g := rec.GlobalMountPath
	if err := os.MkdirAll(g, 0o750); err != nil {
		return fmt.Errorf("creating the global mount point: %w", err)
	}
	table, err := readMountTable()
	if err != nil {
		return err
	}
	if m := table.find(g); m != nil {
		same, err := isDevice(m, rec.Device)
		if err != nil || !same {
			return fmt.Errorf("%s is already mounted from %s, not from the volume's device %s: %w", g, m.Source, rec.Device, errNoRollback)
		}
		return nil // mounted by an earlier, interrupted call
	}
	probe, err := ProbeDevice(ctx, d.Exec, rec.Device)
	if err != nil {
		return fmt.Errorf("refusing to format or mount: %w", err)
	}
	if probe.Blank && req.AccessMode == pvoptions.AccessReadOnlyMany {
		return fmt.Errorf("volume %s is ReadOnlyMany and blank: a ReadOnlyMany volume is never formatted (every node mounts it read-only); "+
			"fill it through a ReadWriteOnce PersistentVolume first", req.VolumeID)
	}
	dec, err := decideFilesystem(probe, req.FSType, req.ReadOnly)
	if err != nil {
		return fmt.Errorf("volume %s on %s: %w", req.VolumeID, rec.Device, err)
	}
	if dec.Note != "" {
		log.WarnContext(ctx, dec.Note, "device", rec.Device)
	}
	gexec := &guardedExec{Interface: d.Exec, ctx: ctx, formatted: func(dev, cmd string, err error) {
		if err != nil {
			return
		}
		log.InfoContext(ctx, "formatted blank volume", "device", dev, "mkfs", cmd, "event", "format")
		d.crash(StepFormat)
	}}
	if dec.Format {
		gexec.allowDev = rec.Device
		log.InfoContext(ctx, "volume verified blank; formatting", "device", rec.Device, "fsType", dec.FSType, "bytes", probe.Size)
	}
	var opts []string
	if req.ReadOnly {
		opts = append(opts, "ro")
	}
	sfm := mount.NewSafeFormatAndMount(d.Mounter, gexec)
	if err := sfm.FormatAndMount(rec.Device, g, dec.FSType, opts); err != nil {
		return fmt.Errorf("mounting %s at %s: %w", rec.Device, g, err)
	}
	rec.FSType = dec.FSType
	d.crash(StepMountGlobal)
	return nil
}

// bind bind-mounts the global mount into the pod directory and records it.
func (d *Driver) bind(ctx context.Context, log *slog.Logger, req *MountRequest, rec *flexstate.Record) error {
	table, err := readMountTable()
	if err != nil {
		return err
	}
	g := table.find(rec.GlobalMountPath)
	if g == nil {
		return fmt.Errorf("global mount %s vanished", rec.GlobalMountPath)
	}
	if m := table.find(req.Dir); m != nil {
		if m.Major != g.Major || m.Minor != g.Minor {
			return fmt.Errorf("%s is already a mount point of %s, not of volume %s: %w", req.Dir, m.Source, req.VolumeID, errNoRollback)
		}
		log.InfoContext(ctx, "already bind-mounted")
	} else {
		if rec.AddMount(req.Dir) {
			if err := d.State.Save(rec); err != nil {
				return err
			}
		}
		if err := os.MkdirAll(req.Dir, 0o750); err != nil {
			return fmt.Errorf("creating the pod volume directory: %w", err)
		}
		opts := []string{"bind"}
		if req.ReadOnly {
			opts = append(opts, "ro")
		}
		if err := d.Mounter.Mount(rec.GlobalMountPath, req.Dir, "", opts); err != nil {
			return fmt.Errorf("bind-mounting into %s: %w", req.Dir, err)
		}
	}
	d.crash(StepBind)
	rec.AddMount(req.Dir)
	rec.Phase = flexstate.PhaseMounted
	if err := d.State.Save(rec); err != nil {
		return err
	}
	d.crash(StepMetadataWrite)
	return nil
}

// rollback undoes a failed mount: the pod directory leaves the record, and the volume is
// detached when nothing on the node uses it any more. Best effort: failures are logged, and the
// record keeps what is left for the next mount or unmount.
func (d *Driver) rollback(ctx context.Context, log *slog.Logger, rec *flexstate.Record, dir string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	if table, err := readMountTable(); err == nil && table.find(dir) == nil && rec.RemoveMount(dir) {
		if err := d.State.Save(rec); err != nil {
			log.ErrorContext(ctx, "rollback: saving the record failed", "error", err)
			return
		}
	}
	if err := d.releaseIfUnused(ctx, log, rec); err != nil {
		log.ErrorContext(ctx, "rollback after a failed mount did not finish; the next mount or unmount retries it", "error", err)
		return
	}
	log.InfoContext(ctx, "rolled back the failed mount")
}

func within(path, dir string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}
