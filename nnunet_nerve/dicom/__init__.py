"""DICOM in and out: reading a scanner's series, writing the DICOM Segmentation, synthetic series."""
