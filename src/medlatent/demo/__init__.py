"""Embedded demo data: small synthetic sources written in the real file formats.

Each generator stands for one published dataset and writes what that dataset ships: DICOM
with the encodings and display pipeline quirks of X-ray, mammography and CT (MONOCHROME1,
VOI LUTs, rescale to HU, RLE and JPEG 2000 compression, shuffled slice files), NIfTI with
non-RAS affines, PNG/JPEG radiographs, MRNet's .npy layout. Images are smooth anatomy-like
backgrounds with noise plus obvious findings (bright blobs, speck clusters, gaps), so the
labels are learnable by a small network. A few broken files are planted on purpose; they
are missing from labels.csv and must be found by scanning. DICOM headers carry fake PHI
(`phi_strings` lists it) so tests can prove that none of it leaks downstream.

Output is a pure function of (spec, seed): UIDs come from the seed, nothing reads a clock,
and the encoders are fixed, so the same call writes byte-identical files.

`registry` holds the generators by name, `generate` (one source and its labels.csv) and
`phi_strings`; `xray`, `mammography`, `ct`, `mri`, `nifti` and `knee` hold one modality each;
`dicom` writes DICOM for all of them and `shapes` draws the anatomy.
"""
