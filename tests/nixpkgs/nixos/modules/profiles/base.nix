# The base profile of installation images (the stand-in's: nothing to add).
{ ... }:
{
}
