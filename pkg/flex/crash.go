package flex

// Crash-injection points, named after the step that has just completed. In a test build (tag
// petfabric_crash, crash_inject.go) PETFABRIC_FLEX_CRASH_AT=<step> makes the driver SIGKILL
// itself right there, so tests can prove that a retry converges from every intermediate state.
// The production build has no hook at all (crash_off.go): the variable is never read, so nobody
// who can set a process's environment can make the driver die half-way through a mount.
const (
	StepMetadataIntent = "metadata-intent"
	StepDateraCreate   = "datera-create"
	StepACLAdd         = "acl-add"
	StepOnline         = "online"
	StepLogin          = "login"
	StepDeviceWait     = "device-wait"
	StepFormat         = "format"
	StepMountGlobal    = "mount-global"
	StepBind           = "bind"
	StepMetadataWrite  = "metadata-write"

	StepUnmountBind    = "unmount-bind"
	StepMetadataUpdate = "metadata-update"
	StepUnmountGlobal  = "unmount-global"
	StepLogout         = "logout"
	StepACLRemove      = "acl-remove"
	StepMetadataRemove = "metadata-remove"
)

// MountSteps and UnmountSteps list the crash points in the order they are passed.
var (
	MountSteps = []string{StepMetadataIntent, StepDateraCreate, StepACLAdd, StepOnline, StepLogin,
		StepDeviceWait, StepFormat, StepMountGlobal, StepBind, StepMetadataWrite}
	UnmountSteps = []string{StepUnmountBind, StepMetadataUpdate, StepUnmountGlobal, StepLogout,
		StepACLRemove, StepMetadataRemove}
)
