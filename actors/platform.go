package actors

// Class groups platforms for the per-class kick policy (SPEC "Device
// sessions and kick policy").
type Class string

const (
	ClassMobile      Class = "mobile"
	ClassPad         Class = "pad"
	ClassDesktop     Class = "desktop"
	ClassWeb         Class = "web"
	ClassMiniprogram Class = "miniprogram"
)

var platformClass = map[string]Class{
	"ios": ClassMobile, "android": ClassMobile, "harmony": ClassMobile,
	"ipad": ClassPad, "androidpad": ClassPad, "pad": ClassPad,
	"windows": ClassDesktop, "macos": ClassDesktop, "linux": ClassDesktop,
	"web":         ClassWeb,
	"miniprogram": ClassMiniprogram,
}

// PlatformClass returns the class of a platform name and whether the name
// is known.
func PlatformClass(platform string) (Class, bool) {
	c, ok := platformClass[platform]
	return c, ok
}
