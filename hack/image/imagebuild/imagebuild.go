// Package imagebuild builds petfabric's container image without a container daemon: the three
// programs compiled static, in one layer on an empty base, written as an OCI image layout and
// as a `docker load`-able tarball. `make image` (hack/image) and the image tests (test/image)
// both go through Build, so what is tested is what is shipped.
//
// The image:
//   - /usr/local/bin/webhook, /usr/local/bin/extender, /usr/local/bin/flex: CGO_ENABLED=0,
//     -trimpath, stripped (-s -w: a panic still prints its stack, the function table stays),
//     version stamped with the ldflags the Makefile passes;
//   - /etc/passwd and /etc/group naming the user and group nonroot (65532), its home
//     /home/nonroot, and root (the node DaemonSet runs as root through its securityContext);
//   - config User 65532:65532 and no entrypoint: every container of the chart names its
//     binary in command:, and a container that names none fails to start instead of running
//     the wrong program;
//   - every timestamp fixed (Epoch), so two builds of the same sources give the same digest.
package imagebuild

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// What the image holds; the Dockerfile at the repository root names the same (a test checks).
const (
	// BinDir is where the programs are installed; the chart's command: lines start with it.
	BinDir = "/usr/local/bin"
	// UID and GID of the image's default user, distroless's "nonroot".
	UID = 65532
	GID = 65532
	// User is the config's User field.
	User = "65532:65532"
	// Repository is the image name the tarball is tagged with: the chart's default image.repository.
	Repository = "ghcr.io/petfabric/petfabric"
	// Source is the org.opencontainers.image.source label.
	Source = "https://github.com/petfabric/petfabric"
	// LayoutDir and TarballName are the outputs under Options.OutDir.
	LayoutDir   = "image/oci"
	TarballName = "image/petfabric-image.tar"
)

// Binaries are the programs in the image: binary name → Go package.
var Binaries = []struct{ Name, Package string }{
	{"webhook", "./cmd/webhook"},
	{"extender", "./cmd/extender"},
	{"flex", "./cmd/flex"},
}

// Epoch is every timestamp in the image: the layer's files and the config's created time.
var Epoch = time.Unix(0, 0).UTC()

// Options say what to build and where.
type Options struct {
	// ModuleRoot is the repository root (the directory of go.mod); empty: found with `go env
	// GOMOD` from the working directory.
	ModuleRoot string
	// OutDir receives LayoutDir, TarballName and the compiled binaries (OutDir/image/rootfs).
	OutDir string
	// Version is stamped into the binaries through LDFLAGS by the Makefile and recorded in
	// the org.opencontainers.image.version label and the tarball's tag.
	Version string
	// LDFlags are the linker flags (the Makefile's LDFLAGS, which stamp the version); -s -w
	// are added.
	LDFlags string
	// GOARCH of the image; empty: the building machine's.
	GOARCH string
	// Go is the go command; empty: "go".
	Go string
	// Stderr receives the compiler's output; nil: os.Stderr.
	Stderr io.Writer
}

// Result describes what Build wrote.
type Result struct {
	Image       v1.Image
	Digest      v1.Hash // the manifest digest
	Tag         name.Tag
	LayoutPath  string
	TarballPath string
	// BinaryPaths are the compiled programs as they are in the layer (name → path on disk).
	BinaryPaths map[string]string
}

// Build compiles the programs and writes the image layout and the tarball.
func Build(opts Options) (*Result, error) {
	if opts.OutDir == "" {
		return nil, errors.New("imagebuild: OutDir is required")
	}
	if err := opts.fillDefaults(); err != nil {
		return nil, err
	}
	tag, err := name.NewTag(Repository + ":" + TagFor(opts.Version))
	if err != nil {
		return nil, fmt.Errorf("imagebuild: tag for version %q: %w", opts.Version, err)
	}
	binDir := filepath.Join(opts.OutDir, "image", "rootfs")
	bins, err := compile(opts, binDir)
	if err != nil {
		return nil, err
	}
	img, err := Assemble(bins, opts.Version, opts.GOARCH)
	if err != nil {
		return nil, err
	}
	digest, err := img.Digest()
	if err != nil {
		return nil, fmt.Errorf("imagebuild: digest: %w", err)
	}
	res := &Result{Image: img, Digest: digest, Tag: tag, BinaryPaths: bins,
		LayoutPath: filepath.Join(opts.OutDir, LayoutDir), TarballPath: filepath.Join(opts.OutDir, TarballName)}
	// A fresh layout each time: AppendImage would otherwise list every earlier build.
	if err := os.RemoveAll(res.LayoutPath); err != nil {
		return nil, fmt.Errorf("imagebuild: clear %s: %w", res.LayoutPath, err)
	}
	lp, err := layout.Write(res.LayoutPath, empty.Index)
	if err != nil {
		return nil, fmt.Errorf("imagebuild: OCI layout %s: %w", res.LayoutPath, err)
	}
	if err := lp.AppendImage(img, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": tag.TagStr(),
	})); err != nil {
		return nil, fmt.Errorf("imagebuild: write OCI layout: %w", err)
	}
	if err := tarball.WriteToFile(res.TarballPath, tag, img); err != nil {
		return nil, fmt.Errorf("imagebuild: write %s: %w", res.TarballPath, err)
	}
	return res, nil
}

var tagUnsafe = regexp.MustCompile(`[^A-Za-z0-9_.-]`)

// TagFor turns a version (git describe output, "devel+<rev>-dirty") into an image tag: the
// characters a tag may not hold become "-"; empty is "devel".
func TagFor(version string) string {
	t := tagUnsafe.ReplaceAllString(version, "-")
	t = strings.TrimLeft(t, ".-")
	if t == "" {
		return "devel"
	}
	if len(t) > 128 {
		t = t[:128]
	}
	return t
}

func moduleRoot(goCmd string) (string, error) {
	out, err := exec.Command(goCmd, "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("imagebuild: go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("imagebuild: not inside the petfabric module (go env GOMOD is empty); set ModuleRoot")
	}
	return filepath.Dir(mod), nil
}

// Compile builds the programs as the image holds them (static, stripped, stamped) into dir
// and returns name → path. Build calls it; so does the chart's flag test (test/chartflags),
// which runs the rendered commands against exactly these binaries.
func Compile(opts Options, dir string) (map[string]string, error) {
	if err := opts.fillDefaults(); err != nil {
		return nil, err
	}
	return compile(opts, dir)
}

// fillDefaults sets what an Options left empty: the go command, the host's architecture,
// stderr, and the module root the go command reports.
func (o *Options) fillDefaults() error {
	if o.Go == "" {
		o.Go = "go"
	}
	if o.GOARCH == "" {
		o.GOARCH = runtime.GOARCH
	}
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	if o.ModuleRoot == "" {
		root, err := moduleRoot(o.Go)
		if err != nil {
			return err
		}
		o.ModuleRoot = root
	}
	return nil
}

// compile builds the programs, static, into dir.
func compile(opts Options, dir string) (map[string]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("imagebuild: %w", err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("imagebuild: %w", err)
	}
	args := []string{"build", "-trimpath", "-buildvcs=false", "-ldflags", strings.TrimSpace("-s -w " + opts.LDFlags), "-o", abs + "/"}
	paths := map[string]string{}
	for _, b := range Binaries {
		args = append(args, b.Package)
		paths[b.Name] = filepath.Join(abs, b.Name)
	}
	cmd := exec.Command(opts.Go, args...)
	cmd.Dir = opts.ModuleRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+opts.GOARCH)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = opts.Stderr, io.MultiWriter(opts.Stderr, &stderr)
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("imagebuild: %s: %w: %s", strings.Join(cmd.Args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return paths, nil
}

// Passwd and Group are the image's /etc/passwd and /etc/group.
const (
	Passwd = "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
	Group  = "root:x:0:\nnonroot:x:65532:\n"
)

// Assemble makes the image from compiled binaries (name → path): one layer on an empty base.
func Assemble(bins map[string]string, version, goarch string) (v1.Image, error) {
	layerTar, err := rootfs(bins)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
	if err != nil {
		return nil, fmt.Errorf("imagebuild: layer: %w", err)
	}
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{Layer: layer, History: v1.History{
		Created: v1.Time{Time: Epoch}, CreatedBy: "hack/image: " + binaryNames(), Comment: "petfabric " + version,
	}})
	if err != nil {
		return nil, fmt.Errorf("imagebuild: append layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("imagebuild: config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = goarch, "linux"
	cf.Created = v1.Time{Time: Epoch}
	cf.Config = v1.Config{
		User:       User,
		Env:        []string{"PATH=" + BinDir + ":/usr/bin:/bin"},
		WorkingDir: "/",
		Labels: map[string]string{
			"org.opencontainers.image.title":       "petfabric",
			"org.opencontainers.image.description": "petfabric: Datera iSCSI volumes for StatefulSets (webhook, scheduler extender, FlexVolume driver and node agent)",
			"org.opencontainers.image.version":     version,
			"org.opencontainers.image.source":      Source,
		},
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("imagebuild: config: %w", err)
	}
	return img, nil
}

func binaryNames() string {
	names := make([]string, len(Binaries))
	for i, b := range Binaries {
		names[i] = b.Name
	}
	return strings.Join(names, " ")
}

// rootfs is the layer's tar: directories first, then the files, every header with fixed
// times and numeric owners.
func rootfs(bins map[string]string) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dir := func(path string, mode int64, uid int) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: path + "/", Mode: mode, Uid: uid, Gid: uid, ModTime: Epoch, Format: tar.FormatPAX})
	}
	file := func(path string, mode int64, data io.Reader, size int64) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: path, Mode: mode, Size: size, ModTime: Epoch, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := io.Copy(tw, data)
		return err
	}
	for _, d := range []struct {
		path string
		mode int64
		uid  int
	}{{"etc", 0o755, 0}, {"home", 0o755, 0}, {"home/nonroot", 0o700, UID}, {"root", 0o700, 0}, {"tmp", 0o1777, 0},
		{"usr", 0o755, 0}, {"usr/local", 0o755, 0}, {"usr/local/bin", 0o755, 0}} {
		if err := dir(d.path, d.mode, d.uid); err != nil {
			return nil, fmt.Errorf("imagebuild: layer: %w", err)
		}
	}
	for _, f := range []struct{ path, data string }{{"etc/passwd", Passwd}, {"etc/group", Group}} {
		if err := file(f.path, 0o644, strings.NewReader(f.data), int64(len(f.data))); err != nil {
			return nil, fmt.Errorf("imagebuild: layer: %w", err)
		}
	}
	for _, b := range Binaries {
		p, ok := bins[b.Name]
		if !ok {
			return nil, fmt.Errorf("imagebuild: no binary %s", b.Name)
		}
		if err := addFile(file, strings.TrimPrefix(BinDir, "/")+"/"+b.Name, p); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("imagebuild: layer: %w", err)
	}
	return buf.Bytes(), nil
}

func addFile(file func(string, int64, io.Reader, int64) error, path, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("imagebuild: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("imagebuild: %w", err)
	}
	if err := file(path, 0o755, f, st.Size()); err != nil {
		return fmt.Errorf("imagebuild: layer %s: %w", path, err)
	}
	return nil
}

// Sizes of an image: what a registry stores and a node pulls (the compressed layers plus the
// config and manifest), and what it unpacks to.
type Sizes struct {
	Compressed, Uncompressed int64
}

// Measure adds up an image's sizes.
func Measure(img v1.Image) (Sizes, error) {
	var s Sizes
	layers, err := img.Layers()
	if err != nil {
		return s, fmt.Errorf("imagebuild: layers: %w", err)
	}
	for _, l := range layers {
		n, err := l.Size()
		if err != nil {
			return s, fmt.Errorf("imagebuild: layer size: %w", err)
		}
		s.Compressed += n
		rc, err := l.Uncompressed()
		if err != nil {
			return s, fmt.Errorf("imagebuild: layer: %w", err)
		}
		u, err := io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil {
			return s, fmt.Errorf("imagebuild: layer: %w", err)
		}
		s.Uncompressed += u
	}
	for _, raw := range []func() ([]byte, error){img.RawConfigFile, img.RawManifest} {
		b, err := raw()
		if err != nil {
			return s, fmt.Errorf("imagebuild: %w", err)
		}
		s.Compressed += int64(len(b))
	}
	return s, nil
}
