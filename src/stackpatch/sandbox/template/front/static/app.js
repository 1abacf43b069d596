// Served by the front from its image, like the routine's nginx static files.
document.documentElement.dataset.loaded = "yes";
