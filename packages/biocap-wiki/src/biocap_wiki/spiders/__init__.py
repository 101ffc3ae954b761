"""Spiders of the biocap-wiki Scrapy project."""
