// Package guest boots a throw-away Linux guest under qemu with a real kernel iSCSI initiator
// (iscsi_tcp, iscsid, iscsiadm, udev) so that the flex driver's iSCSI path runs against the real
// thing. This machine's own kernel has no initiator; the guest's stock Debian kernel does.
//
// The guest image is an initramfs built from the host's Debian packages (the binaries plus the
// libraries ldd names) and the kernel and busybox that hack/setup-guest.sh caches. It is built
// once and cached by a hash of everything that goes into it. Each guest gets a second, small cpio
// archive appended (the kernel unpacks concatenated archives in order) carrying the freshly built
// flex binary, its node config and the test's script, so the base image never changes per test.
//
// Everything runs inside a network namespace made per guest: a bridge with the host side's
// address, tgtd's portal on it, the Datera simulator's API listener on it, and the guest's tap.
// Nothing listens or routes outside that namespace.
package guest

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// Image is a bootable guest: a kernel and the base initramfs.
type Image struct {
	// Kernel is the uncompressed vmlinux when it could be cut out of the bzImage (booted through
	// its PVH entry, which saves the decompressor's ~2 s under software emulation), else vmlinuz.
	Kernel string
	// Initramfs is the gzip'd newc cpio of the base system.
	Initramfs string
	// Busybox is the static busybox used to pack cpio archives.
	Busybox string
	// Built reports whether this call built the image (false: it came from the cache).
	Built bool
	// BuildTime is how long building (or finding) the image took.
	BuildTime time.Duration
}

// CacheDir is where hack/setup-guest.sh leaves the kernel and busybox and where images are cached.
func CacheDir() string {
	if c := os.Getenv("PETFABRIC_CACHE"); c != "" {
		return filepath.Join(c, "guest")
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "petfabric", "guest")
}

// guestModules are loaded in the guest; their dependency closure is copied from modules.dep.
// The device-mapper ones are loaded only by tests that start multipathd.
var guestModules = []string{"virtio_pci", "virtio_net", "crc32c_generic", "sd_mod", "iscsi_tcp", "ext4", "xfs",
	"dm_multipath", "dm_round_robin", "dm_service_time"}

// multipathFiles are taken from the multipath-tools package hack/setup-guest.sh unpacks (it is
// not installed on the host: see there), relative to its root; globs allowed. The shared
// libraries are loaded from /lib, the checker and prioritizer plugins from /lib/multipath.
var multipathFiles = []string{"sbin/multipath", "sbin/multipathd", "lib/lib*.so.0", "lib/multipath/*.so"}

// guestBinaries are copied from the host with their libraries: guest path → host command.
var guestBinaries = [][2]string{
	{"/usr/sbin/iscsid", "iscsid"},
	{"/usr/sbin/iscsiadm", "iscsiadm"},
	{"/usr/bin/udevadm", "udevadm"},
	{"/lib/udev/scsi_id", "/lib/udev/scsi_id"},
	{"/usr/sbin/mke2fs", "mke2fs"},
	{"/usr/sbin/mkfs.xfs", "mkfs.xfs"},
	{"/usr/sbin/blkid", "blkid"},
	{"/usr/sbin/fsck", "fsck"},
	{"/usr/sbin/e2fsck", "e2fsck"},
	{"/usr/sbin/debugfs", "debugfs"},
	{"/sbin/dmsetup", "dmsetup"}, // run by the device-mapper udev rules (xfsprogs → libdevmapper → dmsetup)
}

// The device-mapper rules name a new dm device in udev's database and release libdevmapper's
// wait for udev (multipathd waits for that event before it adds the next path to a map).
var udevRules = []string{"50-udev-default.rules", "60-block.rules", "60-persistent-storage.rules",
	"55-dm.rules", "60-persistent-storage-dm.rules", "95-dm-notify.rules"}

var (
	imageOnce sync.Once
	imageVal  *Image
	imageErr  error
)

// BuildImage returns the guest image, building it at most once per process and only when the
// cache has no image for the same inputs.
func BuildImage() (*Image, error) {
	imageOnce.Do(func() { imageVal, imageErr = buildImage(CacheDir(), os.Stderr) })
	return imageVal, imageErr
}

// inputs are the files of a build, resolved on the host.
type inputs struct {
	kernelRoot, kver, busybox string
	bins                      [][2]string // guest path, host path
	libs                      []string
	multipath                 [][2]string // guest path, host path (multipath-tools and its libraries)
}

func resolveInputs(cache string) (*inputs, error) {
	cur, err := filepath.EvalSymlinks(filepath.Join(cache, "current"))
	if err != nil {
		return nil, fmt.Errorf("guest kernel not fetched (%s): run hack/setup-guest.sh: %w", filepath.Join(cache, "current"), err)
	}
	in := &inputs{kernelRoot: filepath.Join(cur, "kernel"), busybox: filepath.Join(cur, "busybox", "bin", "busybox")}
	mods, err := os.ReadDir(filepath.Join(in.kernelRoot, "lib", "modules"))
	if err != nil || len(mods) != 1 {
		return nil, fmt.Errorf("guest kernel in %s: want exactly one lib/modules/<version> (%v)", in.kernelRoot, err)
	}
	in.kver = mods[0].Name()
	if _, err := os.Stat(in.busybox); err != nil {
		return nil, fmt.Errorf("busybox-static not fetched: run hack/setup-guest.sh: %w", err)
	}
	libs := map[string]bool{}
	for _, b := range guestBinaries {
		host := b[1]
		if !filepath.IsAbs(host) {
			if host, err = exec.LookPath(host); err != nil {
				return nil, fmt.Errorf("guest image: %w (make test's setup installs it)", err)
			}
		}
		if host, err = filepath.EvalSymlinks(host); err != nil {
			return nil, fmt.Errorf("guest image: %w", err)
		}
		in.bins = append(in.bins, [2]string{b[0], host})
		l, err := sharedLibs(host)
		if err != nil {
			return nil, err
		}
		for _, x := range l {
			libs[x] = true
		}
	}
	mp := filepath.Join(cur, "multipath")
	for _, g := range multipathFiles {
		files, _ := filepath.Glob(filepath.Join(mp, g))
		if len(files) == 0 {
			return nil, fmt.Errorf("multipath-tools not fetched (no %s in %s): run hack/setup-guest.sh", g, mp)
		}
		for _, f := range files {
			in.multipath = append(in.multipath, [2]string{"/" + strings.TrimPrefix(f, mp+"/"), f})
			l, err := sharedLibs(f, "LD_LIBRARY_PATH="+filepath.Join(mp, "lib"))
			if err != nil {
				return nil, err
			}
			for _, x := range l {
				if !strings.HasPrefix(x, mp+"/") { // its own libraries are in the list already
					libs[x] = true
				}
			}
		}
	}
	// multipathd cancels its threads; glibc's pthread_cancel loads libgcc_s at run time (ldd
	// cannot see that), from the directory libc is in.
	for l := range libs {
		if filepath.Base(l) == "libc.so.6" {
			libs[filepath.Join(filepath.Dir(l), "libgcc_s.so.1")] = true
			break
		}
	}
	for l := range libs {
		in.libs = append(in.libs, l)
	}
	sort.Strings(in.libs)
	return in, nil
}

// sharedLibs lists what ldd says bin loads (absolute paths, the loader included), with env
// added to ldd's environment.
func sharedLibs(bin string, env ...string) ([]string, error) {
	cmd := exec.Command("ldd", bin)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w: %s", bin, err, out)
	}
	var libs []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case strings.Contains(sc.Text(), "not found"):
			return nil, fmt.Errorf("ldd %s: %s", bin, strings.TrimSpace(sc.Text()))
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			libs = append(libs, f[2])
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
			libs = append(libs, f[0])
		}
	}
	return libs, nil
}

// key hashes everything a build copies or writes: file contents, the script texts and the lists.
func (in *inputs) key() (string, error) {
	h := sha256.New()
	// Bump the version when populate's layout changes in a way the texts and lists do not show.
	fmt.Fprintf(h, "v1\n%s\n%s\n%s\n%s\n%s\n%v\n%v\n%s\n", in.kver, initScript, guestLib, iscsidConf, strings.Join(guestModules, ","), guestBinaries, udevRules, multipathConf)
	files := []string{in.busybox, filepath.Join(in.kernelRoot, "boot", "vmlinuz-"+in.kver)}
	for _, b := range in.bins {
		files = append(files, b[1])
	}
	for _, b := range in.multipath {
		files = append(files, b[1])
	}
	files = append(files, in.libs...)
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return "", fmt.Errorf("guest image input: %w", err)
		}
		fmt.Fprintf(h, "%s\n", f)
		_, err = io.Copy(h, fh)
		fh.Close()
		if err != nil {
			return "", fmt.Errorf("guest image input %s: %w", f, err)
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

func buildImage(cache string, progress io.Writer) (*Image, error) {
	start := time.Now()
	in, err := resolveInputs(cache)
	if err != nil {
		return nil, err
	}
	key, err := in.key()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(cache, "images", in.kver+"-"+key)
	img := &Image{Initramfs: filepath.Join(dir, "initramfs.img"), Busybox: in.busybox}
	pickKernel := func() {
		img.Kernel = filepath.Join(dir, "vmlinux")
		if _, err := os.Stat(img.Kernel); err != nil {
			img.Kernel = filepath.Join(dir, "vmlinuz")
		}
	}
	if _, err := os.Stat(filepath.Join(dir, ".done")); err == nil {
		pickKernel()
		img.BuildTime = time.Since(start)
		return img, nil
	}
	fmt.Fprintf(progress, "[guest] building the guest image %s (kernel %s)\n", dir, in.kver)
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	stage, err := os.MkdirTemp(dir, "stage-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(stage)
	if err := in.populate(stage); err != nil {
		return nil, err
	}
	if err := packCPIO(in.busybox, stage, img.Initramfs); err != nil {
		return nil, err
	}
	vmlinuz := filepath.Join(dir, "vmlinuz")
	if err := copyFile(filepath.Join(in.kernelRoot, "boot", "vmlinuz-"+in.kver), vmlinuz, 0o644); err != nil {
		return nil, err
	}
	if err := extractVmlinux(vmlinuz, filepath.Join(dir, "vmlinux")); err != nil {
		fmt.Fprintf(progress, "[guest] booting the bzImage: %v\n", err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".done"), nil, 0o644); err != nil {
		return nil, err
	}
	pickKernel()
	// Images of other inputs are stale now (each is ~90 MB): keep only this one.
	if old, err := filepath.Glob(filepath.Join(cache, "images", "*")); err == nil {
		for _, o := range old {
			if o != dir {
				_ = os.RemoveAll(o)
			}
		}
	}
	img.Built, img.BuildTime = true, time.Since(start)
	fmt.Fprintf(progress, "[guest] image built in %s\n", img.BuildTime.Round(10*time.Millisecond))
	return img, nil
}

// populate lays out the guest's root file system in root.
func (in *inputs) populate(root string) error {
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "usr/local/bin", "lib", "lib64", "lib/systemd",
		"etc/iscsi", "etc/udev/rules.d", "etc/petfabric", "etc/multipath", "proc", "sys", "dev", "run", "tmp", "mnt", "var/lib/iscsi",
		"var/lock", "var/log", "root"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return err
		}
	}
	if err := copyFile(in.busybox, filepath.Join(root, "bin", "busybox"), 0o755); err != nil {
		return err
	}
	out, err := exec.Command(in.busybox, "--list").Output()
	if err != nil {
		return fmt.Errorf("busybox --list: %w", err)
	}
	for _, a := range strings.Fields(string(out)) {
		if a != "busybox" {
			if err := os.Symlink("busybox", filepath.Join(root, "bin", a)); err != nil {
				return err
			}
		}
	}
	if err := in.installModules(root); err != nil {
		return err
	}
	for _, b := range in.bins {
		if err := copyFile(b[1], filepath.Join(root, b[0]), 0o755); err != nil {
			return err
		}
	}
	for _, l := range in.libs {
		if err := copyFile(l, filepath.Join(root, l), 0o755); err != nil {
			return err
		}
	}
	for _, b := range in.multipath {
		if err := copyFile(b[1], filepath.Join(root, b[0]), 0o755); err != nil {
			return err
		}
	}
	links := map[string]string{
		"lib/systemd/systemd-udevd": "/usr/bin/udevadm", "usr/sbin/mkfs.ext4": "mke2fs",
		"usr/sbin/fsck.ext4": "e2fsck", "sbin/fsck.ext4": "/usr/sbin/e2fsck",
	}
	for l, target := range links {
		if err := os.Symlink(target, filepath.Join(root, l)); err != nil {
			return err
		}
	}
	for _, r := range udevRules {
		if err := copyFile(filepath.Join("/lib/udev/rules.d", r), filepath.Join(root, "etc/udev/rules.d", r), 0o644); err != nil {
			return err
		}
	}
	if _, err := os.Stat("/etc/mke2fs.conf"); err == nil {
		if err := copyFile("/etc/mke2fs.conf", filepath.Join(root, "etc/mke2fs.conf"), 0o644); err != nil {
			return err
		}
	}
	files := map[string]string{
		"init":                   initScript,
		"etc/iscsi/iscsid.conf":  iscsidConf,
		"etc/passwd":             "root:x:0:0:root:/root:/bin/sh\n",
		"etc/group":              "root:x:0:\ndisk:x:6:\ntty:x:5:\n",
		"etc/petfabric/guest.sh": guestLib,
		"etc/multipath.conf":     multipathConf,
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(root, name), []byte(text), 0o755); err != nil {
			return err
		}
	}
	return nil
}

// installModules copies the guest modules and their dependency closure, then indexes them.
func (in *inputs) installModules(root string) error {
	kmod := filepath.Join(in.kernelRoot, "lib", "modules", in.kver)
	if _, err := os.Stat(filepath.Join(kmod, "modules.dep")); err != nil {
		// The .deb ships no modules.dep (its postinst runs depmod).
		if out, err := exec.Command(in.busybox, "depmod", "-b", in.kernelRoot, in.kver).CombinedOutput(); err != nil {
			return fmt.Errorf("depmod of the guest kernel: %w: %s", err, out)
		}
	}
	dep, err := os.ReadFile(filepath.Join(kmod, "modules.dep"))
	if err != nil {
		return err
	}
	deps := map[string][]string{}
	byName := map[string]string{}
	for _, line := range strings.Split(string(dep), "\n") {
		mod, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		deps[mod] = strings.Fields(rest)
		base := filepath.Base(mod)
		base = base[:strings.Index(base, ".ko")]
		byName[strings.ReplaceAll(base, "-", "_")] = mod
	}
	want := map[string]bool{}
	for _, m := range guestModules {
		f, ok := byName[m]
		if !ok {
			return fmt.Errorf("guest kernel %s has no module %s", in.kver, m)
		}
		want[f] = true
		for _, d := range deps[f] {
			want[d] = true
		}
	}
	dst := filepath.Join(root, "lib", "modules", in.kver)
	for f := range want {
		if err := copyFile(filepath.Join(kmod, f), filepath.Join(dst, f), 0o644); err != nil {
			return err
		}
	}
	for _, f := range []string{"modules.order", "modules.builtin", "modules.builtin.modinfo"} {
		if _, err := os.Stat(filepath.Join(kmod, f)); err == nil {
			if err := copyFile(filepath.Join(kmod, f), filepath.Join(dst, f), 0o644); err != nil {
				return err
			}
		}
	}
	if out, err := exec.Command(in.busybox, "depmod", "-b", root, in.kver).CombinedOutput(); err != nil {
		return fmt.Errorf("depmod in the guest image: %w: %s", err, out)
	}
	return nil
}

// packCPIO writes dir as a gzip'd newc cpio archive (busybox cpio, files in sorted order).
func packCPIO(busybox, dir, out string) error {
	var list []string
	err := filepath.WalkDir(dir, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		list = append(list, "./"+filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		return err
	}
	slices.Sort(list)
	f, err := os.Create(out + ".tmp")
	if err != nil {
		return err
	}
	defer f.Close()
	zw, _ := gzip.NewWriterLevel(f, gzip.BestSpeed)
	var stderr bytes.Buffer
	cmd := exec.Command(busybox, "cpio", "-o", "-H", "newc")
	cmd.Dir, cmd.Stdin, cmd.Stdout, cmd.Stderr = dir, strings.NewReader(strings.Join(list, "\n")+"\n"), zw, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("packing %s: %w: %s", dir, err, stderr.String())
	}
	if err := zw.Close(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(out+".tmp", out)
}

// extractVmlinux cuts the xz payload out of a bzImage and decompresses it to the ELF vmlinux.
func extractVmlinux(bzImage, out string) error {
	data, err := os.ReadFile(bzImage)
	if err != nil {
		return err
	}
	off := bytes.Index(data, []byte("\xfd7zXZ\x00"))
	if off < 0 {
		return errors.New("no xz payload in the bzImage")
	}
	var elf bytes.Buffer
	cmd := exec.Command("xz", "-dc", "--single-stream")
	cmd.Stdin, cmd.Stdout = bytes.NewReader(data[off:]), &elf
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("xz: %w", err)
	}
	if !bytes.HasPrefix(elf.Bytes(), []byte("\x7fELF")) {
		return errors.New("the bzImage payload is not an ELF vmlinux")
	}
	return os.WriteFile(out, elf.Bytes(), 0o644)
}

func copyFile(src, dst string, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copying %s: %w", src, err)
	}
	return out.Close()
}
