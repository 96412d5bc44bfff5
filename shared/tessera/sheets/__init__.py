"""Sheets: what a dropped sheet says about itself (`spec`), the page turned into ink (`page`),
deskewing (`tilt`), grids from ruled lines (`ruling`) or ink gaps (`gaps`), and cutting it into
clean cells (`cutting`)."""
