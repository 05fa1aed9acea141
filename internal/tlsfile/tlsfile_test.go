package tlsfile

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCAPoolRefusesFilesWithoutCertificates(t *testing.T) {
	dir := t.TempDir()
	_, err := CAPool(filepath.Join(dir, "missing.pem"))
	require.ErrorIs(t, err, os.ErrNotExist)

	junk := filepath.Join(dir, "junk.pem")
	require.NoError(t, os.WriteFile(junk, []byte("not a certificate"), 0o600))
	_, err = CAPool(junk)
	require.ErrorContains(t, err, "no PEM certificate in "+junk)
}
