// Package image tests petfabric's container image as `make image` builds it (hack/image's
// imagebuild.Build), read back from the OCI layout and the docker tarball with
// go-containerregistry: the three programs are there, executable and static, print the stamped
// version, the default user is not root, and two builds of the same sources have one digest.
package image

import (
	"archive/tar"
	"bufio"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/stretchr/testify/require"

	"github.com/petfabric/petfabric/hack/image/imagebuild"
)

const stamp = "v0.0.0-imagetest"

func build(t *testing.T) *imagebuild.Result {
	t.Helper()
	start := time.Now()
	res, err := imagebuild.Build(imagebuild.Options{
		OutDir:  t.TempDir(),
		Version: stamp,
		LDFlags: "-X github.com/petfabric/petfabric/pkg/version.Version=" + stamp,
	})
	require.NoError(t, err)
	t.Logf("image %s built in %s", res.Digest, time.Since(start).Round(time.Millisecond))
	return res
}

func TestImage(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles the three programs")
	}
	res := build(t)

	// Read back from both outputs: the OCI layout's index names one image, the tarball holds
	// the same one under the tag.
	idx, err := layout.ImageIndexFromPath(res.LayoutPath)
	require.NoError(t, err)
	im, err := idx.IndexManifest()
	require.NoError(t, err)
	require.Len(t, im.Manifests, 1)
	require.Equal(t, res.Digest, im.Manifests[0].Digest)
	require.Equal(t, res.Tag.TagStr(), im.Manifests[0].Annotations["org.opencontainers.image.ref.name"])
	img, err := idx.Image(res.Digest)
	require.NoError(t, err)
	fromTar, err := tarball.ImageFromPath(res.TarballPath, &res.Tag)
	require.NoError(t, err)
	// A docker tarball stores the config and the layers, not the manifest (the loader writes
	// its own): the same image is the same config and the same layer contents.
	for _, pair := range []struct {
		what string
		get  func(v1.Image) (v1.Hash, error)
	}{
		{"config", func(i v1.Image) (v1.Hash, error) { return i.ConfigName() }},
		{"layer", func(i v1.Image) (v1.Hash, error) {
			ls, err := i.Layers()
			if err != nil || len(ls) != 1 {
				return v1.Hash{}, fmt.Errorf("want one layer, got %d (%v)", len(ls), err)
			}
			return ls[0].DiffID()
		}},
	} {
		want, err := pair.get(img)
		require.NoError(t, err)
		got, err := pair.get(fromTar)
		require.NoError(t, err)
		require.Equal(t, want, got, "the docker tarball holds the layout's %s", pair.what)
	}

	cf, err := img.ConfigFile()
	require.NoError(t, err)
	require.Equal(t, "linux", cf.OS)
	require.Equal(t, imagebuild.User, cf.Config.User)
	require.NotRegexp(t, `^(0|root)(:|$)`, cf.Config.User, "the image's default user is not root")
	require.Empty(t, cf.Config.Entrypoint, "no entrypoint: the chart names the program in command:")
	require.Equal(t, stamp, cf.Config.Labels["org.opencontainers.image.version"])
	require.Equal(t, imagebuild.Source, cf.Config.Labels["org.opencontainers.image.source"])

	files := extract(t, img)
	dir := t.TempDir()
	for _, b := range imagebuild.Binaries {
		path := strings.TrimPrefix(imagebuild.BinDir, "/") + "/" + b.Name
		f, ok := files[path]
		require.True(t, ok, "%s is in the image", path)
		require.Equal(t, byte(tar.TypeReg), f.hdr.Typeflag, path)
		require.Equal(t, int64(0o755), f.hdr.Mode&0o7777, "%s is executable by everyone", path)
		local := filepath.Join(dir, b.Name)
		require.NoError(t, os.WriteFile(local, f.data, 0o755))
		requireStatic(t, local)
		arg := "--version"
		if b.Name == "flex" {
			arg = "version"
		}
		out, err := exec.Command(local, arg).CombinedOutput()
		require.NoError(t, err, "%s %s: %s", b.Name, arg, out)
		require.True(t, strings.HasPrefix(string(out), b.Name+" "+stamp+" "), "%s %s printed %q", b.Name, arg, out)
	}
	passwd, ok := files["etc/passwd"]
	require.True(t, ok, "/etc/passwd is in the image")
	require.Contains(t, string(passwd.data), fmt.Sprintf("nonroot:x:%d:%d:", imagebuild.UID, imagebuild.GID), "the default user has a passwd entry")
	group, ok := files["etc/group"]
	require.True(t, ok, "/etc/group is in the image")
	require.Contains(t, string(group.data), fmt.Sprintf("nonroot:x:%d:", imagebuild.GID))
	require.Equal(t, fmt.Sprintf("%d:%d", imagebuild.UID, imagebuild.GID), imagebuild.User)
	for path, f := range files {
		require.True(t, f.hdr.ModTime.Equal(imagebuild.Epoch), "%s has the fixed timestamp, not %s", path, f.hdr.ModTime)
	}

	sizes, err := imagebuild.Measure(img)
	require.NoError(t, err)
	t.Logf("image size: %.1f MiB compressed (pulled), %.1f MiB uncompressed", float64(sizes.Compressed)/(1<<20), float64(sizes.Uncompressed)/(1<<20))
	fmt.Printf("image size: %d bytes compressed, %d bytes uncompressed\n", sizes.Compressed, sizes.Uncompressed)

	// Reproducible: a second build from the same sources (a fresh output directory, the
	// programs relinked from the build cache) gives the same manifest digest.
	again := build(t)
	require.Equal(t, res.Digest, again.Digest, "two builds of the same sources give the same image")
}

// requireStatic: an ELF executable with no program interpreter and no dynamic section runs
// without a libc, on an empty base image.
func requireStatic(t *testing.T, path string) {
	t.Helper()
	f, err := elf.Open(path)
	require.NoError(t, err, "%s is an ELF file", path)
	defer f.Close()
	require.Equal(t, elf.ET_EXEC, f.Type, "%s is an executable", path)
	for _, p := range f.Progs {
		require.NotEqual(t, elf.PT_INTERP, p.Type, "%s names a dynamic loader: not static", path)
		require.NotEqual(t, elf.PT_DYNAMIC, p.Type, "%s has a dynamic section: not static", path)
	}
}

type entry struct {
	hdr  *tar.Header
	data []byte
}

// extract flattens the image's layers into path → entry (paths without the leading "/").
func extract(t *testing.T, img v1.Image) map[string]entry {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	out := map[string]entry{}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		data, err := io.ReadAll(tr)
		require.NoError(t, err)
		out[strings.TrimPrefix(strings.TrimSuffix(hdr.Name, "/"), "/")] = entry{hdr, data}
	}
	return out
}

// TestDockerfileMatches: the Dockerfile docker users build from names the same programs, the
// same install directory, the same non-root user and no entrypoint, as the daemonless build.
func TestDockerfileMatches(t *testing.T) {
	f, err := os.Open(filepath.Join("..", "..", "Dockerfile"))
	require.NoError(t, err)
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	cont := ""
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if strings.HasSuffix(l, "\\") {
			cont += strings.TrimSuffix(l, "\\") + " "
			continue
		}
		lines = append(lines, cont+l)
		cont = ""
	}
	require.NoError(t, sc.Err())
	var froms, users, copies, runs []string
	for _, l := range lines {
		instr, rest, _ := strings.Cut(l, " ")
		switch strings.ToUpper(instr) {
		case "FROM":
			froms = append(froms, rest)
		case "USER":
			users = append(users, strings.TrimSpace(rest))
		case "COPY":
			copies = append(copies, rest)
		case "RUN":
			runs = append(runs, rest)
		case "ENTRYPOINT", "CMD":
			t.Errorf("the Dockerfile sets %s; the daemonless image has none (the chart names the program)", instr)
		}
	}
	require.Len(t, froms, 2, "a build stage and the final stage")
	require.Regexp(t, `^gcr\.io/distroless/static(-debian\d+)?:nonroot$`, froms[1], "the final stage is distroless static, no libc")
	require.Equal(t, []string{imagebuild.User}, users, "the same default user")
	var final string
	for _, c := range copies {
		if strings.HasPrefix(c, "--from=build ") {
			final = c
		}
	}
	require.NotEmpty(t, final, "a COPY --from=build of the programs")
	fields := strings.Fields(final)
	require.Equal(t, imagebuild.BinDir+"/", fields[len(fields)-1], "installed in the same directory")
	var build string
	for _, r := range runs {
		if strings.Contains(r, "go build") {
			build = r
		}
	}
	require.Contains(t, build, "CGO_ENABLED=0", "static")
	require.Contains(t, build, "-trimpath")
	require.Contains(t, build, "-X github.com/petfabric/petfabric/pkg/version.Version=${VERSION}", "version stamped")
	for _, b := range imagebuild.Binaries {
		require.Contains(t, fields, "/out/"+b.Name, "the Dockerfile installs %s", b.Name)
		require.Contains(t, strings.Fields(build), b.Package, "the Dockerfile builds %s", b.Package)
	}
	require.Len(t, fields, len(imagebuild.Binaries)+2, "exactly the programs the image holds")
}
