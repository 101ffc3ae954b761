"""pybioclip's own tests (``tests/test_predict.py`` of pybioclip 2.1.6, MIT License, Copyright (c)
2024-2025 John Bradley) run against biocap-predict's classes on the toy model.

Changed from pybioclip's file: the imports; the model and index arguments (the toy model exported as
an OpenCLIP folder and a taxa index of its text embeddings, in place of BioCLIP 2 and the embeddings
pybioclip downloads); the data that depends on the model (see the fixture below); the module that
``tqdm`` is patched in. Nothing else.

Not run: ``test_tree_of_life_classifier_groups_probs_on_cpu`` and ``test_predict_with_batch_size``
(skipped: they replace pybioclip's internal ``create_probabilities_for_images``, which does not
exist here), and the three tests of ``TestEnsureTolSupportedModel`` (not ported: they test
pybioclip's map from its model names to the Hugging Face repositories of its embeddings,
``ensure_tol_supported_model`` and ``get_tol_repo_id``, which biocap-predict does not have).
"""
# ruff: noqa: E501, I001, F401, F841

import unittest
from unittest.mock import patch, mock_open, Mock, ANY
from biocap_predict.classifiers import TreeOfLifeClassifier, BaseClassifier, Rank, get_rank_labels
from biocap_predict.classifiers import CustomLabelsClassifier
from biocap_predict.classifiers import CustomLabelsBinningClassifier
import torch
import pandas as pd
import PIL.Image
import pytest

pytestmark = pytest.mark.slow
MOCKS_INTERNALS = ("mocks pybioclip's create_probabilities_for_images (one probability vector per "
                   "image), which biocap-predict's streaming top-k scoring does not have")

# Set by the fixture below: the toy model and index in place of BioCLIP 2 and its tree of life, a
# toy photo the model names right in place of the cat (and an RGBA PNG of it), its lineage in place
# of the cat's, two species of the index in place of the two bears, the photo's species and another
# in place of 'cat' and 'dog', and the toy's embedding width in place of 768.
MODEL = TOY = {}
EXAMPLE_CAT_IMAGE = EXAMPLE_CAT_IMAGE2 = TOY_MODEL = CAT = DOG = SPECIES_1 = SPECIES_2 = None
LINEAGE = {}
DIM = 0


@pytest.fixture(scope="module", autouse=True)
def toy_model_and_images(open_clip_toy, photo, tmp_path_factory):
    global MODEL, TOY, EXAMPLE_CAT_IMAGE, EXAMPLE_CAT_IMAGE2, TOY_MODEL, CAT, DOG, SPECIES_1, SPECIES_2
    global LINEAGE, DIM
    import polars as pl

    from biocap_predict import TaxaIndex

    TOY_MODEL, DIM = open_clip_toy.model, open_clip_toy.dim
    MODEL = {"model_str": TOY_MODEL}
    TOY = {**MODEL, "index": open_clip_toy.index}
    EXAMPLE_CAT_IMAGE = str(photo["path"])
    EXAMPLE_CAT_IMAGE2 = str(tmp_path_factory.mktemp("images") / "photo.png")
    PIL.Image.open(EXAMPLE_CAT_IMAGE).convert("RGBA").save(EXAMPLE_CAT_IMAGE2)  # as mycat.png, RGBA
    CAT, DOG = photo["scientific"], photo["others"][0]
    index = TaxaIndex.load(open_clip_toy.index)
    taxa = index.taxa.with_columns(binomial=index.binomials())
    LINEAGE = taxa.filter(pl.col("binomial") == CAT).row(0, named=True)
    SPECIES_1, SPECIES_2 = taxa.filter(pl.col("binomial") != CAT)["binomial"][:2]

class TestPredict(unittest.TestCase):
    def test_tree_of_life_classifier_species_single(self):
        classifier = TreeOfLifeClassifier(**TOY)
        prediction_ary = classifier.predict(images=EXAMPLE_CAT_IMAGE, rank=Rank.SPECIES)
        self.assertEqual(len(prediction_ary), 5)
        prediction_dict = {
            'file_name': EXAMPLE_CAT_IMAGE,
            'kingdom': LINEAGE['kingdom'],
            'phylum': LINEAGE['phylum'],
            'class': LINEAGE['class'],
            'order': LINEAGE['order'],
            'family': LINEAGE['family'],
            'genus': LINEAGE['genus'],
            'species_epithet': unittest.mock.ANY,
            'species': unittest.mock.ANY,
            'common_name': unittest.mock.ANY,
            'score': unittest.mock.ANY
        }
        self.assertEqual(prediction_ary[0], prediction_dict)

    def test_tree_of_life_classifier_species_ary_one(self):
        classifier = TreeOfLifeClassifier(**TOY)
        prediction_ary = classifier.predict(images=[EXAMPLE_CAT_IMAGE], rank=Rank.SPECIES)
        self.assertEqual(len(prediction_ary), 5)

    def test_tree_of_life_classifier_species_ary_multiple(self):
        classifier = TreeOfLifeClassifier(**TOY)
        prediction_ary = classifier.predict(images=[EXAMPLE_CAT_IMAGE, EXAMPLE_CAT_IMAGE2],
                                            rank=Rank.SPECIES)
        self.assertEqual(len(prediction_ary), 10)

    def test_tree_of_life_classifier_species_ary_multiple_pil(self):
        classifier = TreeOfLifeClassifier(**TOY)
        img1 = PIL.Image.open(EXAMPLE_CAT_IMAGE)
        img2 = PIL.Image.open(EXAMPLE_CAT_IMAGE2)
        prediction_ary = classifier.predict(images=[img1, img2],
                                            rank=Rank.SPECIES)
        self.assertEqual(len(prediction_ary), 10)

    def test_tree_of_life_classifier_multiple_pil_batching(self):
        classifier = TreeOfLifeClassifier(**TOY)
        img1 = PIL.Image.open(EXAMPLE_CAT_IMAGE)
        img2 = PIL.Image.open(EXAMPLE_CAT_IMAGE2)

        prediction_ary = classifier.predict(images=[img1, img2],
                                            rank=Rank.SPECIES,
                                            batch_size=1)

        self.assertEqual(len(prediction_ary), 10)
        for i in range(0, 5):
            self.assertEqual(prediction_ary[i]['file_name'], '0')
        for i in range(5, 10):
            self.assertEqual(prediction_ary[i]['file_name'], '1')

    def test_tree_of_life_classifier_family(self):
        classifier = TreeOfLifeClassifier(**TOY)
        prediction_ary = classifier.predict(images=[EXAMPLE_CAT_IMAGE], rank=Rank.FAMILY, k=2)
        self.assertEqual(len(prediction_ary), 2)
        prediction_dict = {
            'file_name': EXAMPLE_CAT_IMAGE,
            'kingdom': LINEAGE['kingdom'],
            'phylum': LINEAGE['phylum'],
            'class': LINEAGE['class'],
            'order': LINEAGE['order'],
            'family': LINEAGE['family'],
            'score': unittest.mock.ANY
        }
        self.assertEqual(prediction_ary[0], prediction_dict)

    @unittest.skip(MOCKS_INTERNALS)
    def test_tree_of_life_classifier_groups_probs_on_cpu(self):
        # Ensure that the probabilities are moved to the cpu
        # before grouping to avoid performance issues
        classifier = TreeOfLifeClassifier(**TOY)

        # Have create_probabilities_for_images return mock probs
        # with values returned from cpu()
        probs = Mock()
        probs.cpu.return_value = torch.Tensor([0.1, 0.2, 0.3])
        classifier.create_probabilities_for_images = Mock()
        classifier.create_probabilities_for_images.return_value = {
            EXAMPLE_CAT_IMAGE: probs
        }

        # Mock format_grouped_probs so we can check the parameters
        classifier.format_grouped_probs = Mock()
        classifier.format_grouped_probs.return_value = []

        classifier.predict(images=[EXAMPLE_CAT_IMAGE], rank=Rank.CLASS, k=2)

        # Ensure that the probabilities were moved to the cpu
        classifier.format_grouped_probs.assert_called_with(
            EXAMPLE_CAT_IMAGE,
            probs.cpu.return_value,
            Rank.CLASS,
            ANY, 2
        )

    def test_custom_labels_classifier(self):
        classifier = CustomLabelsClassifier(cls_ary=[CAT, DOG], **MODEL)
        prediction_ary = classifier.predict(images=EXAMPLE_CAT_IMAGE)
        self.assertEqual(prediction_ary, [
            {'file_name': EXAMPLE_CAT_IMAGE, 'classification': CAT, 'score': unittest.mock.ANY},
            {'file_name': EXAMPLE_CAT_IMAGE, 'classification': DOG, 'score': unittest.mock.ANY},
        ])

    def test_custom_labels_classifier_ary_one(self):
        classifier = CustomLabelsClassifier(cls_ary=[CAT, DOG], **MODEL)
        prediction_ary = classifier.predict(images=[EXAMPLE_CAT_IMAGE])
        self.assertEqual(prediction_ary, [
            {'file_name': EXAMPLE_CAT_IMAGE, 'classification': CAT, 'score': unittest.mock.ANY},
            {'file_name': EXAMPLE_CAT_IMAGE, 'classification': DOG, 'score': unittest.mock.ANY},
        ])

    def test_custom_labels_classifier_ary_multiple(self):
        classifier = CustomLabelsClassifier(cls_ary=[CAT, DOG], **MODEL)
        prediction_ary = classifier.predict(images=[EXAMPLE_CAT_IMAGE, EXAMPLE_CAT_IMAGE2])
        self.assertEqual(prediction_ary, [
            {'file_name': EXAMPLE_CAT_IMAGE, 'classification': CAT, 'score': unittest.mock.ANY},
            {'file_name': EXAMPLE_CAT_IMAGE, 'classification': DOG, 'score': unittest.mock.ANY},
            {'file_name': EXAMPLE_CAT_IMAGE2, 'classification': CAT, 'score': unittest.mock.ANY},
            {'file_name': EXAMPLE_CAT_IMAGE2, 'classification': DOG, 'score': unittest.mock.ANY},
        ])

    def test_custom_labels_classifier_ary_multiple_pil(self):
        classifier = CustomLabelsClassifier(cls_ary=[CAT, DOG], **MODEL)
        img1 = PIL.Image.open(EXAMPLE_CAT_IMAGE)
        img2 = PIL.Image.open(EXAMPLE_CAT_IMAGE2)
        prediction_ary = classifier.predict(images=[img1, img2])
        self.assertEqual(prediction_ary, [
            {'file_name': '0', 'classification': CAT, 'score': unittest.mock.ANY},
            {'file_name': '0', 'classification': DOG, 'score': unittest.mock.ANY},
            {'file_name': '1', 'classification': CAT, 'score': unittest.mock.ANY},
            {'file_name': '1', 'classification': DOG, 'score': unittest.mock.ANY},
        ])

    def test_predict_with_rgba_image(self):
        # Ensure that the classifier can handle RGBA images
        classifier = TreeOfLifeClassifier(**TOY)
        prediction_ary = classifier.predict(images=[EXAMPLE_CAT_IMAGE2], rank=Rank.SPECIES)
        self.assertEqual(len(prediction_ary), 5)

    def test_predict_with_bins(self):
        classifier = CustomLabelsBinningClassifier(**MODEL, cls_to_bin={
            'cat': 'one',
            'mouse': 'two',
            'fish': 'two',
        })
        prediction_ary = classifier.predict(images=[EXAMPLE_CAT_IMAGE2])
        self.assertEqual(len(prediction_ary), 2)
        self.assertEqual(prediction_ary[0]['file_name'], EXAMPLE_CAT_IMAGE2)
        names = set([pred['classification'] for pred in prediction_ary])
        self.assertEqual(names, set(['one', 'two']))

        classifier = CustomLabelsBinningClassifier(**MODEL, cls_to_bin={
            'cat': 'one',
            'mouse': 'two',
            'fish': 'three',
        })
        prediction_ary = classifier.predict(images=[EXAMPLE_CAT_IMAGE2])
        self.assertEqual(len(prediction_ary), 3)
        self.assertEqual(prediction_ary[0]['file_name'], EXAMPLE_CAT_IMAGE2)
        names = set([pred['classification'] for pred in prediction_ary])
        self.assertEqual(names, set(['one', 'two', 'three']))

    def test_predict_with_bins_bad_values(self):
        with self.assertRaises(ValueError) as raised_exceptions:
            CustomLabelsBinningClassifier(**MODEL, cls_to_bin={
                'cat': 'one',
                'mouse': '',
                'fish': 'two',
            })
        self.assertEqual(str(raised_exceptions.exception),
                         "Empty, null, or nan are not allowed for bin values.")
        with self.assertRaises(ValueError) as raised_exceptions:
            CustomLabelsBinningClassifier(**MODEL, cls_to_bin={
                'cat': 'one',
                'mouse': None,
                'fish': 'two',
            })
        self.assertEqual(str(raised_exceptions.exception),
                         "Empty, null, or nan are not allowed for bin values.")
        with self.assertRaises(ValueError) as raised_exceptions:
            CustomLabelsBinningClassifier(**MODEL, cls_to_bin={
                'cat': 'one',
                'mouse': pd.NA,
                'fish': 'two',
            })
        self.assertEqual(str(raised_exceptions.exception),
                         "Empty, null, or nan are not allowed for bin values.")

    def test_predict_with_bins_pil(self):
        classifier = CustomLabelsBinningClassifier(**MODEL, cls_to_bin={
            'cat': 'one',
            'mouse': 'two',
            'fish': 'two',
        })
        img1 = PIL.Image.open(EXAMPLE_CAT_IMAGE)
        prediction_ary = classifier.predict(images=[img1])
        self.assertEqual(len(prediction_ary), 2)
        self.assertEqual(prediction_ary[0]['file_name'], '0')
        names = set([pred['classification'] for pred in prediction_ary])
        self.assertEqual(names, set(['one', 'two']))

    @unittest.skip(MOCKS_INTERNALS)
    def test_predict_with_batch_size(self):
        classifier = TreeOfLifeClassifier(**TOY)
        classifier.create_probabilities_for_images = Mock()
        classifier.create_probabilities_for_images.return_value = {
            EXAMPLE_CAT_IMAGE: torch.tensor([1, 0, 0, 0, 0]),
            EXAMPLE_CAT_IMAGE2: torch.tensor([1, 0, 0, 0, 0]),
        }
        prediction_ary = classifier.predict(images=[EXAMPLE_CAT_IMAGE, EXAMPLE_CAT_IMAGE2],
                                            rank=Rank.SPECIES, batch_size=1)
        self.assertEqual(classifier.create_probabilities_for_images.call_count, 2)
        self.assertEqual(len(prediction_ary), 10)

        classifier.create_probabilities_for_images.reset_mock()
        prediction_ary = classifier.predict(images=[EXAMPLE_CAT_IMAGE, EXAMPLE_CAT_IMAGE2],
                                            rank=Rank.SPECIES, batch_size=2)
        self.assertEqual(classifier.create_probabilities_for_images.call_count, 1)

    def test_predict_with_callback(self):
        """Test callback is invoked with correct parameters"""
        classifier = TreeOfLifeClassifier(**TOY)
        callback_calls = []

        def test_callback(processed, total):
            callback_calls.append((processed, total))

        classifier.predict(images=[EXAMPLE_CAT_IMAGE, EXAMPLE_CAT_IMAGE2],
                           rank=Rank.SPECIES, batch_size=1, callback=test_callback)

        # Verify callback was called with correct progression
        self.assertEqual(len(callback_calls), 2)
        self.assertEqual(callback_calls, [(1, 2), (2, 2)])
        # Verify final call shows completion
        self.assertEqual(callback_calls[-1][0], callback_calls[-1][1])

    def test_predict_callback_disables_tqdm(self):
        """Test tqdm is disabled when callback is provided"""
        classifier = CustomLabelsClassifier(cls_ary=[CAT, DOG], **MODEL)

        with patch('biocap_predict.classifiers.tqdm') as mock_tqdm:
            mock_progress = Mock()
            mock_tqdm.return_value.__enter__.return_value = mock_progress
            classifier.predict(images=[EXAMPLE_CAT_IMAGE], callback=lambda p, t: None)

            # Verify tqdm was called with 'disable=True'
            mock_tqdm.assert_called_once()
            call_kwargs = mock_tqdm.call_args[1]
            self.assertTrue(call_kwargs.get('disable'))
            mock_progress.update.assert_not_called()

    def test_predict_without_callback_uses_tqdm(self):
        """Test tqdm is enabled when no callback provided"""
        classifier = CustomLabelsClassifier(cls_ary=[CAT, DOG], **MODEL)

        with patch('biocap_predict.classifiers.tqdm') as mock_tqdm:
            mock_progress = Mock()
            mock_tqdm.return_value.__enter__.return_value = mock_progress
            classifier.predict(images=[EXAMPLE_CAT_IMAGE])

            # Verify tqdm was called with 'disable=False'
            mock_tqdm.assert_called_once()
            call_kwargs = mock_tqdm.call_args[1]
            self.assertFalse(call_kwargs.get('disable'))
            self.assertGreater(mock_progress.update.call_count, 0)

    def test_predict_callback_with_multiple_batches(self):
        """Test callback is invoked correctly with multiple batches"""
        classifier = CustomLabelsClassifier(cls_ary=[CAT, DOG], **MODEL)
        callback_calls = []

        def test_callback(processed, total):
            callback_calls.append((processed, total))

        # Use 3 images with batch_size=2 to ensure multiple batches
        classifier.predict(images=[EXAMPLE_CAT_IMAGE, EXAMPLE_CAT_IMAGE2, EXAMPLE_CAT_IMAGE],
                           batch_size=2, callback=test_callback)

        # Verify that with 3 images and batch_size=2 (2 batches: [2,1]), the callback is called once per batch (2 calls)
        self.assertEqual(len(callback_calls), 2)
        self.assertEqual(callback_calls[0], (2, 3))
        self.assertEqual(callback_calls[1], (3, 3))

    def test_get_label_data(self):
        classifier = TreeOfLifeClassifier(**TOY)
        df = classifier.get_label_data()
        self.assertEqual(list(df.columns), ['kingdom', 'phylum', 'class', 'order', 'family', 'genus',
                                            'species_epithet', 'species','common_name'])

    def test_create_taxa_filter(self):
        classifier = TreeOfLifeClassifier(**TOY)
        taxa_filter = classifier.create_taxa_filter(
            Rank.SPECIES,
            user_values=[SPECIES_1, SPECIES_2]
        )
        self.assertEqual(len(taxa_filter), len(classifier.txt_names))
        # Should have two embeddings since we asked for two species
        self.assertEqual(sum(taxa_filter), 2)

        # Should raise exception for bogus taxa values
        with self.assertRaises(ValueError) as raised_ex:
            classifier.create_taxa_filter(
                Rank.SPECIES,
                user_values=[SPECIES_1, 'Ursus fakespeciesname']
            )
        self.assertEqual(str(raised_ex.exception),
                         "Unknown species received: Ursus fakespeciesname. Only known species may be used.")

    def test_apply_filter(self):
        classifier = TreeOfLifeClassifier(**TOY)
        # Ensure an error is raised if there are too few boolean values in the array
        with self.assertRaises(ValueError) as raised_ex:
            classifier.apply_filter([False, True])

        # Test that if we filter a single species we get one embedding
        taxon_filter = classifier.get_label_data().species == SPECIES_1
        classifier.apply_filter(taxon_filter)
        self.assertEqual(classifier.get_txt_embeddings().shape, torch.Size([DIM, 1]))
        self.assertEqual(len(classifier.get_current_txt_names()), 1)

    def test_forward(self):
        classifier = TreeOfLifeClassifier(**TOY)
        img = classifier.ensure_rgb_image(EXAMPLE_CAT_IMAGE)
        img_features = torch.stack([classifier.preprocess(img)])
        result = classifier.forward(x=img_features)
        self.assertEqual(result.shape, torch.Size([1, len(classifier.txt_names)]))

    def test_create_taxa_filter_from_csv(self):
        classifier = TreeOfLifeClassifier(**TOY)
        csv_content = f'species\n{SPECIES_1}\n{SPECIES_2}'
        with patch("builtins.open", mock_open(read_data=csv_content)):
            taxa_filter = classifier.create_taxa_filter_from_csv('somefile.csv')
        self.assertEqual(len(taxa_filter), len(classifier.txt_names))
        # Should have two embeddings since we asked for two species
        self.assertEqual(sum(taxa_filter), 2)

        csv_content = f'species\n{SPECIES_1}\nUrsus fakename'
        with self.assertRaises(ValueError) as raised_exception:
            with patch("builtins.open", mock_open(read_data=csv_content)):
                taxa_filter = classifier.create_taxa_filter_from_csv('somefile.csv')
        self.assertEqual(str(raised_exception.exception),
                         'Unknown species received: Ursus fakename. Only known species may be used.')

    def test_get_rank_labels(self):
        self.assertEqual(','.join(get_rank_labels()), 'kingdom,phylum,class,order,family,genus,species')

    def test_format_species_probs_too_few_species(self):
        classifier = TreeOfLifeClassifier(**TOY)

        # test when k < number of probabilities
        probs = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
        top_probs = classifier.format_species_probs(EXAMPLE_CAT_IMAGE, probs, k=5)
        self.assertEqual(len(top_probs), 5)
        self.assertEqual(top_probs[0]['file_name'], EXAMPLE_CAT_IMAGE)

        # test when k > number of probabilities
        probs = torch.tensor([0.1, 0.2, 0.3, 0.4])
        top_probs = classifier.format_species_probs(EXAMPLE_CAT_IMAGE, probs, k=5)


class TestEmbed(unittest.TestCase):
    def test_get_image_features(self):
        classifier = TreeOfLifeClassifier(**TOY, device='cpu')
        self.assertEqual(classifier.model_str, TOY_MODEL)
        features = classifier.create_image_features_for_image(EXAMPLE_CAT_IMAGE, normalize=False)
        self.assertEqual(features.shape, torch.Size([DIM]))

    def test_get_image_features_pil(self):
        classifier = TreeOfLifeClassifier(**TOY, device='cpu')
        self.assertEqual(classifier.model_str, TOY_MODEL)
        features = classifier.create_image_features_for_image(PIL.Image.open(EXAMPLE_CAT_IMAGE), normalize=False)
        self.assertEqual(features.shape, torch.Size([DIM]))
