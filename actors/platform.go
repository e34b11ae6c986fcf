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

// classIndex is a Class in one byte, as a session holds it: the string's
// 16 bytes and pointer less in each of a million sessions, which keeps a
// session with its login ID's text inside the 288-byte size class, one a
// login's short-lived objects hardly use (see TestHotObjectSizes).
type classIndex uint8

// classes are the Classes by classIndex; 0 is "" (no class).
var classes = [...]Class{"", ClassMobile, ClassPad, ClassDesktop, ClassWeb, ClassMiniprogram}

// indexOf returns c's index; a Class not in classes panics (every Class
// is a constant above).
func indexOf(c Class) classIndex {
	for i, k := range classes {
		if k == c {
			return classIndex(i)
		}
	}
	panic("actors: unknown device class " + string(c))
}

func (i classIndex) class() Class { return classes[i] }

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
