package cluster

import (
	"fmt"
	"unicode/utf8"
)

// maxNameLen is the longest stream or shard reader name HStreamDB accepts.
const maxNameLen = 255

// NameProblem says what is wrong with the name of a stream, shard reader
// or subscription, or "" if it
// is valid. HStreamDB's rule (Utils/Validation.hs): 1 to 255 characters, the
// first a letter, the rest letters, digits, '-' or '_'. weir allows ASCII
// letters and digits only: names become etcd keys and log fields, where
// look-alike Unicode characters would only confuse.
func NameProblem(name string) string {
	if name == "" {
		return "it is empty"
	}
	if n := utf8.RuneCountInString(name); n > maxNameLen {
		return fmt.Sprintf("it is %d characters long, over the limit of %d", n, maxNameLen)
	}
	pos := 0
	for _, r := range name {
		pos++
		switch {
		case pos == 1 && !isLetter(r):
			return fmt.Sprintf("it must start with a letter, not %q", r)
		case !isLetter(r) && !isDigit(r) && r != '-' && r != '_':
			return fmt.Sprintf("character %d is %q; only letters, digits, '-' and '_' are allowed", pos, r)
		}
	}
	return ""
}

func isLetter(r rune) bool { return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' }
func isDigit(r rune) bool  { return '0' <= r && r <= '9' }
