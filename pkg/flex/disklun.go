package flex

import "log/slog"

// adoptLUN records the LUN the initiator found the volume's disk on (Datera's is 0; a target
// that keeps LUN 0 for a controller has the disk behind it) before anything depends on it: the
// device wait, and the logout of an unmount or rollback, which deletes that LUN's SCSI device.
// save persists the record holding *lun.
func (d *Driver) adoptLUN(log *slog.Logger, lun *int, found int, save func() error) error {
	if found == *lun {
		return nil
	}
	log.Info("the volume's disk is not at the expected LUN", "expected", *lun, "lun", found)
	*lun = found
	return save()
}
