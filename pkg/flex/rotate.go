package flex

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
)

// RotatingWriter appends to a log file and rotates it by size: path → path.1 → … → path.N.
//
// It is written for the FlexVolume call pattern: kubelet starts one short process per call and
// several run at once, all appending to the same file. Every write is a single O_APPEND write
// (whole lines stay whole), the size is taken from the file itself rather than counted, and
// rotation happens under an flock on path.lock, after checking that no other process has
// rotated already (the open file is no longer the file at path). lumberjack and similar
// libraries rotate per process and would race here, hence this small writer.
type RotatingWriter struct {
	path     string
	maxBytes int64
	backups  int

	mu sync.Mutex
	f  *os.File
}

// OpenRotating opens (creating) the log file. maxBytes ≤ 0 disables rotation.
func OpenRotating(path string, maxBytes int64, backups int) (*RotatingWriter, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("log directory: %w", err)
	}
	w := &RotatingWriter{path: path, maxBytes: maxBytes, backups: max(backups, 1)}
	if err := w.open(); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *RotatingWriter) open() error {
	f, err := os.OpenFile(w.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_CLOEXEC, 0o640)
	if err != nil {
		return fmt.Errorf("opening log file: %w", err)
	}
	w.f = f
	return nil
}

// Write appends p, rotating first when p would take the file past maxBytes.
func (w *RotatingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return 0, os.ErrClosed
	}
	if w.maxBytes > 0 {
		if st, err := w.f.Stat(); err == nil && st.Size()+int64(len(p)) > w.maxBytes && st.Size() > 0 {
			if err := w.rotate(); err != nil {
				// Keep logging into the current file rather than lose the line.
				_, _ = w.f.Write([]byte(`{"level":"WARN","msg":"log rotation failed","error":` + strconv.Quote(err.Error()) + "}\n"))
			}
		}
	}
	return w.f.Write(p)
}

func (w *RotatingWriter) rotate() error {
	lf, err := os.OpenFile(w.path+".lock", os.O_RDWR|os.O_CREATE|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	defer lf.Close()
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX); err != nil {
		return err
	}
	defer syscall.Flock(int(lf.Fd()), syscall.LOCK_UN) //nolint:errcheck // closing drops it anyway

	cur, err1 := w.f.Stat()
	onDisk, err2 := os.Stat(w.path)
	if err1 == nil && err2 == nil && os.SameFile(cur, onDisk) && onDisk.Size() > 0 {
		// Still ours and still too big: shift the backups and start a new file.
		for i := w.backups - 1; i >= 1; i-- {
			_ = os.Rename(w.path+"."+strconv.Itoa(i), w.path+"."+strconv.Itoa(i+1))
		}
		if err := os.Rename(w.path, w.path+".1"); err != nil {
			return err
		}
	}
	// Either we rotated or another process did: write to the file now at path.
	old := w.f
	if err := w.open(); err != nil {
		w.f = old
		return err
	}
	return old.Close()
}

// Close closes the file.
func (w *RotatingWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return nil
	}
	err := w.f.Close()
	w.f = nil
	return err
}
