"""Where a batch's images, participants and reference masks come from, and normative
references built from a dataset's or registry's volunteers.

``ImageSource`` reads a converted dataset (folder, id or name: ``imagesTr/<case>_0000.nii.gz``,
else ``imagesTs``; the consensus in ``labelsTr``) or a registry (``sub-<id>/anat/sub-<id>_T2w.*``,
the raters' masks); ``load_reference`` turns a ``.json`` file or such a source into a
``references.NormativeReference``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from nnunet_nerve.biomarkers.measures import LesionRule, NerveBiomarkers, NormativeReference, biomarkers_from_files
from nnunet_nerve.biomarkers.summary import summary_line
from nnunet_nerve.errors import NerveError
from nnunet_nerve.registry.dataset_info import FILE_ENDING, IMAGES_TR, IMAGES_TS, LABELS_TR, image_file_name

Log = Optional[Callable[[str], None]]


class ImageSource:
    """Where the images (and participants) of cases are: a converted dataset or a registry."""

    def __init__(self, id_or_path):
        from nnunet_nerve.registry.dataset_info import PARTICIPANTS_FILE, find_dataset_dir, read_participants

        path = Path(str(id_or_path)).expanduser()
        self.registry = None
        if path.is_dir() and not (path / IMAGES_TR).is_dir() and (path / PARTICIPANTS_FILE).is_file():
            from nnunet_nerve.registry.reader import scan_registry

            self.registry = scan_registry(path)
            self.folder = self.registry.root
            self.participants = {p.participant_id: p for p in self.registry.participants}
        else:
            self.folder = find_dataset_dir(id_or_path)
            if not (self.folder / IMAGES_TR).is_dir() and not (self.folder / IMAGES_TS).is_dir():
                raise NerveError(f"{self.folder}: neither a converted dataset (no imagesTr) nor a registry "
                                 f"(no {PARTICIPANTS_FILE})")
            tsv = self.folder / PARTICIPANTS_FILE
            self.participants = {p.participant_id: p for p in read_participants(tsv)} if tsv.is_file() else {}

    def image(self, case: str) -> "Path | None":
        if self.registry is not None:
            files = self.registry.files.get(case)
            return files.image if files else None
        for sub in (IMAGES_TR, IMAGES_TS):
            candidate = self.folder / sub / image_file_name(case)
            if candidate.is_file():
                return candidate
        return None

    def participant(self, case: str):
        return self.participants.get(case)

    def volunteer_masks(self) -> dict:
        """case -> (image path, mask) for every volunteer: the dataset's consensus file
        (labelsTr), or for a registry the majority vote of the raters' masks (an array)."""
        volunteers = sorted(c for c, p in self.participants.items() if p.cohort == "volunteer")
        if not volunteers:
            raise NerveError(f"{self.folder}: no volunteers in participants.tsv; a normative reference needs them")
        out = {}
        for case in volunteers:
            image = self.image(case)
            if self.registry is None:
                mask = self.folder / LABELS_TR / f"{case}{FILE_ENDING}"
            else:
                mask = sorted(self.registry.files[case].masks.values()) if case in self.registry.files else []
            if image is None or not mask or (isinstance(mask, Path) and not mask.is_file()):
                raise NerveError(f"{self.folder}: volunteer {case} lacks an image or a mask")
            out[case] = (image, mask)
        return out


def load_reference(spec, rule: LesionRule = LesionRule(), log: Log = None, side: "str | None" = None
                   ) -> "NormativeReference | None":
    """None -> None; a NormativeReference as is; a ``.json`` file written by this module;
    else a converted dataset (folder, id, name) or registry whose volunteers' consensus
    masks (not post-processed: they are the raters') give a reference per thigh location
    and region (``references.NormativeReference``). ``side`` names their branches."""
    if spec is None or isinstance(spec, NormativeReference):
        return spec
    if str(spec).endswith(".json") and Path(spec).is_file():
        return NormativeReference.from_json_file(spec)
    source = ImageSource(spec)
    results = {}
    for case, (image, mask) in source.volunteer_masks().items():
        if isinstance(mask, list):
            results[case] = _registry_consensus_biomarkers(image, mask, side)
        else:
            results[case] = biomarkers_from_files(image, mask, rule=rule, side=side, postprocess=False)
        if log:
            log(f"reference {case}: {summary_line(results[case])}")
    locations = {case: source.participant(case).location for case in results}
    reference = NormativeReference.from_results(str(source.folder), results, locations)
    if log:
        for location, cases in reference.volunteers.items():
            regions = ", ".join(f"{region} {len(stats['cases'])}"
                                for region, stats in reference.regions.get(location, {}).items())
            log(f"normative reference {location}: {len(cases)} volunteer(s); per region {regions or 'none'} "
                f"(a region needs {reference.min_volunteers})")
    return reference


def _registry_consensus_biomarkers(image_path, mask_paths: list, side: "str | None" = None) -> NerveBiomarkers:
    """Biomarkers of the raters' majority vote over a registry image."""
    from nnunet_nerve.biomarkers.measures import lateral_vector, nerve_biomarkers, read_mask_for_image
    from nnunet_nerve.registry.consensus import majority_vote
    from nnunet_nerve.io.images import spacing_zyx

    masks, array, image = [], None, None
    for path in mask_paths:
        array, mask, image = read_mask_for_image(image_path, path)
        masks.append(mask)
    return nerve_biomarkers(majority_vote(masks).astype(bool), spacing_zyx(image), array,
                            lateral_xy=lateral_vector(image.GetDirection(), side))
