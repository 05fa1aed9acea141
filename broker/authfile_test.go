package broker

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/weir-log/weir/conf"
)

// testHash hashes pw at bcrypt's lowest cost, to keep tests fast.
func testHash(t testing.TB, pw string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
	require.NoError(t, err)
	return string(h)
}

func writeFile(t testing.TB, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

func TestAuthFileErrors(t *testing.T) {
	h := testHash(t, "pw")
	for name, tc := range map[string]struct {
		file string
		want []string
	}{
		"plain-text password": {
			file: "users:\n  - username: a\n    password: secret\n",
			want: []string{"mqtt.auth-file: line 3: users[0].password is not a bcrypt hash"},
		},
		"unknown field": {
			file: "users:\n  - username: a\n    password: " + h + "\n    pasword: x\nacl:\n  - publish: [a]\n    subscibe: [b]\n",
			want: []string{
				`mqtt.auth-file: line 4: users[0]: unknown field "pasword"`,
				`mqtt.auth-file: line 7: acl[0]: unknown field "subscibe"`,
			},
		},
		"unknown top-level field": {
			file: "user:\n  - username: a\n",
			want: []string{`mqtt.auth-file: line 1: unknown field "user"`},
		},
		"bad filter": {
			file: "acl:\n  - publish:\n      - ok/#\n      - bad/#/x\n",
			want: []string{`mqtt.auth-file: line 4: acl[0].publish[1]: "bad/#/x": # must be the last level`},
		},
		"rule naming an unknown user": {
			file: "users:\n  - username: a\n    password: " + h + "\nacl:\n  - username: b\n    publish: [x]\n",
			want: []string{`mqtt.auth-file: line 5: acl[0].username "b" is not one of users`},
		},
		"rule granting nothing": {
			file: "acl:\n  - username: '*'\n",
			want: []string{"mqtt.auth-file: line 2: acl[0] grants nothing"},
		},
		"duplicate user and missing password": {
			file: "users:\n  - username: a\n    password: " + h + "\n  - username: a\n    password: " + h + "\n  - username: c\n",
			want: []string{
				`mqtt.auth-file: line 4: users[1]: user "a" is listed twice`,
				"mqtt.auth-file: line 6: users[2] has no password",
			},
		},
		"not yaml": {
			file: "users: [\n",
			want: []string{"mqtt.auth-file: yaml:"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := conf.Default()
			cfg.MQTT.Listen = "127.0.0.1:0"
			cfg.MQTT.AuthFile = writeFile(t, "auth.yaml", tc.file)
			b, err := New(Options{Config: cfg})
			require.Nil(t, b)
			require.Error(t, err)
			for _, w := range tc.want {
				require.Contains(t, err.Error(), w)
			}
			// One line per problem.
			require.Len(t, strings.Split(err.Error(), "\n"), len(tc.want))
		})
	}
}

// TestAuthFileCertUsernames: with mqtt.peer-cert-as-username, a rule may
// name a certificate's identity, which is no user.
func TestAuthFileCertUsernames(t *testing.T) {
	file := []byte("acl:\n  - username: device-7\n    publish: [d/device-7/#]\n")
	af, err := parseAuthFileFor(file, true)
	require.NoError(t, err)
	require.True(t, af.rules.allowed(identity{clientID: "c", username: "device-7"}, "d/device-7/t", true))
	require.False(t, af.rules.allowed(identity{clientID: "c", username: "device-8"}, "d/device-7/t", true))
	_, err = parseAuthFileFor(file, false)
	require.ErrorContains(t, err, `acl[0].username "device-7" is not one of users`)
}

func TestAuthFileMissing(t *testing.T) {
	cfg := conf.Default()
	cfg.MQTT.AuthFile = filepath.Join(t.TempDir(), "nope.yaml")
	_, err := New(Options{Config: cfg})
	require.ErrorIs(t, err, os.ErrNotExist)
	require.ErrorContains(t, err, "mqtt.auth-file: ")
}

func TestAuthFileEmpty(t *testing.T) {
	for _, in := range []string{"", "# nothing\n", "---\n", "users:\nacl:\n", "users: []\nacl: []\n"} {
		af, err := parseAuthFile([]byte(in))
		require.NoError(t, err, "%q", in)
		require.Empty(t, af.users)
		require.Empty(t, af.rules)
	}
}

func TestHashPassword(t *testing.T) {
	h, err := HashPassword("s3cret")
	require.NoError(t, err)
	require.NoError(t, bcrypt.CompareHashAndPassword([]byte(h), []byte("s3cret")))
	af, err := parseAuthFile([]byte("users:\n  - username: u\n    password: " + h + "\n"))
	require.NoError(t, err)
	require.Contains(t, af.users, "u")

	_, err = HashPassword("")
	require.True(t, errors.Is(err, ErrEmptyPassword))
}
